"""The pieces of a training step, shared by the training loop, the plan of `make reproduce`, the
benchmark and the numerics fingerprint: the batch draw, the optimizer and its schedule, one
step at a precision, the allocator setting that keeps a CPU step fast, and the name of the
device it ran on."""

import ctypes
import platform
import time
from pathlib import Path

import torch

from cerebral.precision import autocast


class BatchSampler:
    """Batches of sequence indices for one epoch, from a generator of its own (saved in the
    checkpoint, so a resumed run draws the same batches).

    random_batches: every step draws `batch_size` sequences uniformly without replacement,
    independently of the other steps (docs/PROTOCOL.md, P2). shuffled_pass: one permutation per
    epoch, cut into len // batch_size batches, the first `steps_per_epoch` of them where it is set
    (debug=tiny's few steps).
    """

    def __init__(self, num_sequences, train_cfg, seed):
        self.n, self.batch, self.sampling = num_sequences, train_cfg.batch_size, train_cfg.sampling
        whole_pass = num_sequences // self.batch
        self.steps = (train_cfg.steps_per_epoch if self.sampling == "random_batches"
                      else min(train_cfg.steps_per_epoch or whole_pass, whole_pass))
        self.generator = torch.Generator().manual_seed(seed)

    def epoch(self):
        if self.sampling == "random_batches":
            for _ in range(self.steps):
                yield torch.randperm(self.n, generator=self.generator)[: self.batch]
        else:
            order = torch.randperm(self.n, generator=self.generator)
            yield from order[: self.steps * self.batch].view(self.steps, self.batch)


def make_optimizer(cfg, params):
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    return torch.optim.Adagrad(params, lr=cfg.lr, initial_accumulator_value=cfg.initial_accumulator_value)


def make_scheduler(cfg, optimizer):
    """The learning rate times `lr_decay_factor` every `lr_decay_every` epochs, or None."""
    if cfg.lr_decay_every is None:
        return None
    return torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_decay_every, cfg.lr_decay_factor)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h


def keep_freed_memory():
    """Let glibc keep freed memory for the next allocation instead of handing it back to the OS.

    By default glibc maps each large buffer (a step's gates, 1-40 MB) afresh and unmaps it when it
    is freed, so every step pays a page fault per 4 KiB page it writes: at paper size 10-30% of a
    CPU step (measured on a 2-core Intel Xeon). Raising the mmap and trim thresholds serves those
    buffers from the heap, already mapped (1 GiB; 32 MiB where an older glibc caps it there). The
    fingerprint's bf16 lines did not move with it. Process-wide and permanent: up to the threshold,
    freed memory stays with the process. True where glibc took both settings; False off glibc
    (macOS, musl, Windows), where it does nothing. (An allocator preloaded in glibc's place, e.g.
    tcmalloc, answers mallopt without acting on it.)"""
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap = mallopt(M_MMAP_THRESHOLD, 1 << 30) or mallopt(M_MMAP_THRESHOLD, 32 << 20)
    trim = mallopt(M_TRIM_THRESHOLD, 1 << 30)
    return bool(mmap and trim)


def use_deterministic_kernels():
    """Deterministic kernels everywhere (docs/PROTOCOL.md, P9: scatter-add backward drifts
    otherwise), and fp32 that stays fp32: cuDNN's LSTM (train.backend=lstm) would use TF32."""
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.allow_tf32 = False


def train_step(model, optimizer, loss_fn, *batch, precision="fp32"):
    """One optimizer step on the loss `loss_fn(model, *batch)`, its forward pass at `precision`."""
    with autocast(precision, next(model.parameters()).device):
        loss = loss_fn(model, *batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def timed_train_step(model, optimizer, loss_fn, *batch, precision="fp32"):
    """Seconds `train_step` takes, the device synchronised after it (the plan's estimate, the benchmark)."""
    start = time.perf_counter()
    train_step(model, optimizer, loss_fn, *batch, precision=precision)
    if batch[0].device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def cpu_model():
    """The processor's model name (e.g. "AMD EPYC 9R14"): timings and bit patterns depend on it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} CPU"


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # the CPU flags that decide bf16's speed and rounding


def cpu_features(cpuinfo=None):
    """What tells apart CPUs that report the same model name (two Intel KVM guests, with and without
    AMX, both say "Intel(R) Xeon(R) Processor"): e.g. "cpu family 26, model 2; avx512_bf16". Read
    from /proc/cpuinfo (or the text given); "" where there is none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    ids = ", ".join(f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields)
    flags = [flag for flag in BF16_FLAGS if flag in fields.get("flags", "").split()]
    return f"{ids}; {' '.join(flags) or 'no bf16 flags'}" if ids else ""


def resolve_device(name):
    """The torch device of the `device` key: auto is CUDA where PyTorch sees it, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{cpu_model()}, {threads} thread{'' if threads == 1 else 's'}"
