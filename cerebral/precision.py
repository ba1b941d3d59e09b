"""Training precision, `train.precision=fp32|bf16`.

bf16 is mixed precision through `torch.autocast`: matrix products take bfloat16 operands and
accumulate in fp32, everything else stays fp32 (parameters, optimizer state, gate activations,
cell states, logits and loss). `nn.LSTM` follows autocast itself; our fused cores read the
autocast state (`gemm_dtype`) and cast their GEMM operands; the models compute their head and
loss outside autocast, on fp32 features.
"""

import contextlib
import functools
import time

import torch

PRECISIONS = ("fp32", "bf16")


def autocast(precision, device):
    """The context a forward pass runs in at `precision` on `device`."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def full_precision(device):
    """A context where autocast is off: for the layers whose outputs must stay fp32 (the logits)."""
    return torch.autocast(torch.device(device).type, enabled=False)


def gemm_dtype(x):
    """The dtype autocast gives matrix products of the tensor x now, or None: when autocast is off
    on x's device, or x is not fp32 (autocast leaves float64 alone)."""
    device_type = x.device.type
    if x.dtype != torch.float32 or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


@functools.cache
def onednn_has_bf16():
    """Whether this CPU's oneDNN runs bf16 kernels (AVX-512 with bf16 support, or AMX)."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def native_lstm_context(core, x):
    """The context `core` runs in on the input x (a tensor or a PackedSequence): for `nn.LSTM`
    on a CPU whose oneDNN has no bf16 kernels (no AVX-512), oneDNN's LSTM cannot run bf16 under
    autocast ("could not create a primitive descriptor"), so oneDNN is switched off for the call
    and PyTorch's own LSTM runs, its matrix products still in bf16. Elsewhere nothing changes."""
    x = x.data if isinstance(x, torch.nn.utils.rnn.PackedSequence) else x
    if (isinstance(core, torch.nn.LSTM) and x.device.type == "cpu" and gemm_dtype(x) == torch.bfloat16
            and not onednn_has_bf16()):
        return _onednn_off()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _onednn_off():
    """oneDNN off, and nothing else changed (`torch.backends.mkldnn.flags` also resets its
    deterministic and TF32 settings, and warns about TF32)."""
    was = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(was)


def _fastest(product, repeats=5, budget_s=0.5):
    """The fastest of `repeats` timed calls after a warm-up; fewer (at least one) once they have
    taken `budget_s`, as an emulated bf16 product can take seconds."""
    product()
    times = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        start = time.perf_counter()
        product()
        times.append(time.perf_counter() - start)
    return min(times)


@functools.cache  # one CPU per process: timed once
def bf16_speedup(rows=128, inner=512, cols=4096):
    """fp32 time / bf16 time of one CPU matrix product at a training step's shape (above 1: bf16
    is faster). CPUs differ: Zen 4's AVX-512 BF16 doubles the product's rate, while a CPU with
    no bf16 instructions (or one whose bf16 instructions run no faster than its fp32 ones)
    pays for the conversions."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    a16, b16 = a.bfloat16(), b.bfloat16()
    return _fastest(lambda: a @ b) / _fastest(lambda: a16 @ b16)


def speed_warning(precision, device):
    """One line warning that bf16 trains slower than fp32 on this CPU, or None."""
    if precision != "bf16" or torch.device(device).type != "cpu":
        return None
    speedup = bf16_speedup()
    if speedup >= 1.0:
        return None
    return (f"warning: train.precision=bf16 will train slower than fp32 on this CPU: its bf16 matrix "
            f"products measured {1 / speedup:.1f}x slower than fp32 ones (no native bf16 speed-up); "
            f"train.precision=fp32 is faster here")
