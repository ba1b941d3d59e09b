"""Training-step benchmark, measured side by side in one run: `make bench` (`--quick`: < 1 minute).

Each entry is the same character model (embedding -> core -> head, Adagrad) with only the core
swapped: our three paper models, `torch.nn.LSTM` with one and two layers, the learned-projection
baseline `lstmp` on our fused core and on `nn.LSTM`, the Cerebral LSTM on `train.backend=lstm`
(torch's LSTM: cuDNN on CUDA, with a target there), and the upstream `cerebral-lstm` package; on
a CPU also our two fused models on the C++ kernels, `train.elementwise=cpp` and `seq` (the "cpp"
and "seq" rows; the targets are the seq rows'), and the GEMM limit: the time of a Cerebral step's
matrix products alone at its shapes, the fastest this work can go on the machine; at paper shapes
each of ours and `nn.LSTM` also runs in bf16, through the training loop's own step
(`train_step(..., precision="bf16")`). Warm-up, then repeats interleaved across entries; median,
minimum and spread, and every ratio from the medians and from the minima.
A last section times the drop-in modes, the core alone in fp32: bidirectional cores, and a
packed batch of variable lengths against nn.LSTM packed and padded (`--modes-only`: just that).
Run it on an otherwise idle machine: two processes sharing two cores make every ratio meaningless.
Writes results/bench.json with the device, versions and the ratios.
"""

import cerebral  # noqa: F401  first: it sets OpenMP's wait policy before torch loads

# isort: split
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
from torch.profiler import ProfilerActivity, profile

from cerebral import CerebralLSTM, PostBiasLSTM
from cerebral.atomic import write_text_atomic
from cerebral.config import compose
from cerebral.cores import use_backend
from cerebral.curves import check_writable
from cerebral.elementwise import KernelBuildError, kernel_ops, use_elementwise
from cerebral.models import CharRNN, build_model
from cerebral.steps import device_name, keep_freed_memory, make_optimizer, resolve_device, timed_train_step
from cerebral.tasks import char_lm_loss

VOCAB = 89
# ratio name -> (entry, reference entry, target: the entry's step time at most this times the reference's).
# The targets are the sequence kernel's (train.elementwise=seq, what `auto` picks on the CPUs it was
# proven on): its Cerebral step no slower than the two-layer nn.LSTM step with the same FLOPs, and
# the upstream package's step at least 1.3x its own. The bf16 ones hold only where bf16 is faster
# than fp32 (paper_section drops them elsewhere).
RATIOS = {
    "cerebral_seq_vs_lstm2": ("cerebral_lstm seq", "nn.LSTM x2", 1.05),
    "stacked_seq_vs_lstm2": ("stacked_lstm seq", "nn.LSTM x2", 1.05),
    "cerebral_seq_bf16_vs_lstm2_bf16": ("cerebral_lstm seq bf16", "nn.LSTM x2 bf16", 1.00),
    "stacked_seq_bf16_vs_lstm2_bf16": ("stacked_lstm seq bf16", "nn.LSTM x2 bf16", 1.10),
    "cerebral_seq_vs_upstream": ("cerebral_lstm seq", "upstream", 1 / 1.3),
    "cerebral_vs_lstm2": ("cerebral_lstm", "nn.LSTM x2", None),
    "stacked_vs_lstm2": ("stacked_lstm", "nn.LSTM x2", None),
    "single_vs_lstm1": ("single_lstm", "nn.LSTM x1", None),
    "cerebral_bf16_vs_lstm2_bf16": ("cerebral_lstm bf16", "nn.LSTM x2 bf16", None),
    "stacked_bf16_vs_lstm2_bf16": ("stacked_lstm bf16", "nn.LSTM x2 bf16", None),
    "single_bf16_vs_single": ("single_lstm bf16", "single_lstm", None),
    "cerebral_cpp_vs_lstm2": ("cerebral_lstm cpp", "nn.LSTM x2", None),
    "stacked_cpp_vs_lstm2": ("stacked_lstm cpp", "nn.LSTM x2", None),
    "cerebral_cpp_bf16_vs_lstm2_bf16": ("cerebral_lstm cpp bf16", "nn.LSTM x2 bf16", None),
    "stacked_cpp_bf16_vs_lstm2_bf16": ("stacked_lstm cpp bf16", "nn.LSTM x2 bf16", None),
    "cerebral_seq_vs_cerebral": ("cerebral_lstm seq", "cerebral_lstm", None),
    "stacked_seq_vs_stacked": ("stacked_lstm seq", "stacked_lstm", None),
    "cerebral_seq_bf16_vs_cerebral_bf16": ("cerebral_lstm seq bf16", "cerebral_lstm bf16", None),
    "stacked_seq_bf16_vs_stacked_bf16": ("stacked_lstm seq bf16", "stacked_lstm bf16", None),
    "cerebral_cpp_vs_cerebral": ("cerebral_lstm cpp", "cerebral_lstm", None),
    "stacked_cpp_vs_stacked": ("stacked_lstm cpp", "stacked_lstm", None),
    "lstm2_bf16_vs_lstm2": ("nn.LSTM x2 bf16", "nn.LSTM x2", None),
    "cerebral_bf16_vs_cerebral": ("cerebral_lstm bf16", "cerebral_lstm", None),
    "upstream_vs_cerebral": ("upstream", "cerebral_lstm", None),
    "lstmp_vs_lstmp_nn_lstm": ("lstmp", "lstmp nn.LSTM", None),
    "lstmp_bf16_vs_lstmp_nn_lstm_bf16": ("lstmp bf16", "lstmp nn.LSTM bf16", None),
    "lstmp_vs_cerebral": ("lstmp", "cerebral_lstm", None),
    "cerebral_lstm_backend_vs_lstm2": ("cerebral_lstm lstm", "nn.LSTM x2", None),
    "cerebral_lstm_backend_bf16_vs_lstm2_bf16": ("cerebral_lstm lstm bf16", "nn.LSTM x2 bf16", None),
    "cerebral_lstm_backend_vs_fused": ("cerebral_lstm lstm", "cerebral_lstm", None),
}
PEAK_MEMORY_TARGET = 1.0  # the sequence kernel's Cerebral step: peak memory at most nn.LSTM x2's
# Targets that hold on CUDA only: there the lstm backend runs cuDNN's kernel, on a CPU PyTorch's own.
CUDA_TARGETS = {"cerebral_lstm_backend_vs_lstm2": 1.3, "cerebral_lstm_backend_bf16_vs_lstm2_bf16": 1.3}


class UpstreamCore(nn.Module):
    """The upstream package's CerebralLSTM (time-major) behind our batch-first core interface."""

    def __init__(self, size):
        super().__init__()
        import cerebral_lstm

        self.rnn, self.hidden_size = cerebral_lstm.CerebralLSTM(size, size), size

    def forward(self, x, state=None):
        output, state = self.rnn(x.transpose(0, 1), state)
        return output.transpose(0, 1), state


def entries(size, include_upstream=True, kernel=False):
    """name -> a function making a fresh model with state `size` (the fused models on the ATen
    calls); with `kernel`, also the fused models on the C++ kernels ("... cpp", "... seq")."""

    def paper(name, elementwise="aten", backend="fused"):
        return lambda: use_backend(use_elementwise(build_model(compose(f"model={name}", f"model.state_size={size}").model,
                                                               VOCAB), elementwise), backend)

    made = {
        "single_lstm": paper("single_lstm"),
        "stacked_lstm": paper("stacked_lstm"),
        "cerebral_lstm": paper("cerebral_lstm"),
        "cerebral_lstm lstm": paper("cerebral_lstm", backend="lstm"),  # train.backend=lstm: torch's LSTM (cuDNN)
        "nn.LSTM x1": lambda: CharRNN(VOCAB, nn.LSTM(size, size, 1, batch_first=True)),
        "nn.LSTM x2": lambda: CharRNN(VOCAB, nn.LSTM(size, size, 2, batch_first=True)),
        # the learned-projection baseline on our fused core, and on nn.LSTM's (PyTorch's own kernel: oneDNN has none)
        "lstmp": paper("lstmp"),
        "lstmp nn.LSTM": lambda: CharRNN(VOCAB, nn.LSTM(size, 2 * size, bias=False, batch_first=True, proj_size=size)),
    }
    if kernel:
        try:
            kernel_ops()
            made.update({f"{name} {kind}": paper(name, kind) for kind in ("cpp", "seq")
                         for name in ("stacked_lstm", "cerebral_lstm")})
        except KernelBuildError as e:
            print(f"the cpp and seq rows are skipped: {e}", file=sys.stderr)
    if include_upstream:
        try:
            import cerebral_lstm  # noqa: F401  (test/bench-only dependency)
            made["upstream"] = lambda: CharRNN(VOCAB, UpstreamCore(size))
        except ImportError:
            print("cerebral-lstm (upstream) is not installed: its row is skipped", file=sys.stderr)
    return made


def step_flops(model, batch, seq_len):
    """Multiply-adds x 2 of forward (each weight matrix of the core once per character, and the
    head), x 3 for forward plus backward."""
    core = 2 * batch * seq_len * sum(p.numel() for p in model.core.parameters() if p.dim() == 2)
    head = 2 * batch * seq_len * model.head.weight.numel()
    return 3 * (core + head)


class Bench:
    """One entry, ready to step: model, optimizer and a fixed batch on the device."""

    def __init__(self, make, batch, seq_len, device, precision="fp32"):
        torch.manual_seed(0)
        self.precision = precision
        self.model = make().to(device)
        self.optimizer = make_optimizer(compose().optim, self.model.parameters())
        self.tokens = torch.randint(0, VOCAB, (batch, seq_len), device=device)
        self.device, self.times = device, []
        self.flops = step_flops(self.model, batch, seq_len)

    def step(self):
        self.times.append(timed_train_step(self.model, self.optimizer, char_lm_loss, self.tokens, self.tokens,
                                           precision=self.precision))

    def peak_memory(self):
        """Peak tensor memory allocated during one step, above what exists before it (bytes)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            self.step()
            return torch.cuda.max_memory_allocated() - before
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            self.step()
        self.times.pop()  # a profiled step is slower; keep it out of the timings
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]")
        level = peak = 0
        for _, nbytes in events:
            level += nbytes
            peak = max(peak, level)
        return peak


class CoreBench:
    """One core alone, ready to step: forward and backward (no optimizer) of a fixed input,
    padded (B, T, features) or a PackedSequence, as nn.LSTM users feed it."""

    def __init__(self, make, data):
        torch.manual_seed(0)
        self.core, self.data, self.times = make(), data, []

    def step(self):
        start = time.perf_counter()
        output, _ = self.core(self.data)
        output = output.data if isinstance(output, PackedSequence) else output
        self.core.zero_grad(set_to_none=True)
        output.sum().backward()
        self.times.append(time.perf_counter() - start)


def run_modes(size, device, warmup, repeats, batch=128, seq_len=20, max_length=100):
    """The drop-in modes, fp32: bidirectional cores at paper shapes, and a packed batch of
    `batch` sequences with lengths uniform in 1..max_length against nn.LSTM on the same packed
    batch and on the batch padded to max_length. Rows by name, and MODE_RATIOS."""
    generator = torch.Generator().manual_seed(0)
    padded = torch.randn(batch, max_length, size, generator=generator).to(device)
    lengths = torch.randint(1, max_length + 1, (batch,), generator=generator)
    packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
    short = padded[:, :seq_len].contiguous()

    def core(cls, layers, bidirectional=False):
        return lambda: cls(size, size, layers, batch_first=True, bidirectional=bidirectional).to(device)

    made = {
        "cerebral bidirectional": (core(CerebralLSTM, 1, True), short),
        "stacked bidirectional": (core(PostBiasLSTM, 2, True), short),
        "nn.LSTM x2 bidirectional": (core(nn.LSTM, 2, True), short),
        "cerebral packed": (core(CerebralLSTM, 1), packed),
        "stacked packed": (core(PostBiasLSTM, 2), packed),
        "nn.LSTM x2 packed": (core(nn.LSTM, 2), packed),
        "nn.LSTM x2 padded": (core(nn.LSTM, 2), padded),
    }
    benches = {name: CoreBench(make, data) for name, (make, data) in made.items()}
    for bench in benches.values():
        for _ in range(warmup):
            bench.step()
        bench.times.clear()
    for _ in range(repeats):  # interleaved, as in `run`
        for bench in benches.values():
            bench.step()
    return {name: {"ms_per_step": 1e3 * statistics.median(b.times), "ms_min": 1e3 * min(b.times),
                   "ms_max": 1e3 * max(b.times)} for name, b in benches.items()}


MODE_RATIOS = {  # as RATIOS: (entry, reference, target)
    "cerebral_bidir_vs_lstm2_bidir": ("cerebral bidirectional", "nn.LSTM x2 bidirectional", 1.15),
    "stacked_bidir_vs_lstm2_bidir": ("stacked bidirectional", "nn.LSTM x2 bidirectional", 1.15),
    "cerebral_packed_vs_lstm2_packed": ("cerebral packed", "nn.LSTM x2 packed", 1.15),
    "stacked_packed_vs_lstm2_packed": ("stacked packed", "nn.LSTM x2 packed", 1.15),
    "cerebral_packed_vs_lstm2_padded": ("cerebral packed", "nn.LSTM x2 padded", 1.15),
    "stacked_packed_vs_lstm2_padded": ("stacked packed", "nn.LSTM x2 padded", 1.15),
}


def ratio_table(rows, ratio_specs):
    """(ratios from medians, ratios from minima, target verdicts) for the specs whose rows exist."""
    ratios, ratios_min, targets = {}, {}, {}
    for name, (entry, reference, target) in ratio_specs.items():
        if entry in rows and reference in rows:
            ratios[name] = rows[entry]["ms_per_step"] / rows[reference]["ms_per_step"]
            ratios_min[name] = rows[entry]["ms_min"] / rows[reference]["ms_min"]
            if target is not None:
                targets[name] = {"target": target, "met": max(ratios[name], ratios_min[name]) <= target}
    return ratios, ratios_min, targets


def print_ratios(ratios, ratios_min, targets):
    print("\nRatios (step time, lower is faster for the first named), from the medians and from the minima:")
    for name, value in ratios.items():
        goal = targets.get(name)
        verdict = f"  target <= {goal['target']:.2f}: {'met' if goal['met'] else 'MISSED'}" if goal else ""
        print(f"  {name:<36}{value:6.2f}{ratios_min.get(name, float('nan')):7.2f}{verdict}")


def run(makers, batch, seq_len, device, warmup, repeats, memory=True, precisions=("fp32",)):
    """Rows per entry and precision ("name" for fp32, "name bf16" for bf16)."""
    benches = {name + ("" if precision == "fp32" else f" {precision}"): Bench(make, batch, seq_len, device, precision)
               for precision in precisions for name, make in makers.items()
               if precision == "fp32" or name != "upstream"}  # the upstream package: fp32 only
    for bench in benches.values():
        for _ in range(warmup):
            bench.step()
        bench.times.clear()
    for _ in range(repeats):  # interleaved, so drifts of the machine hit every entry alike
        for bench in benches.values():
            bench.step()
    rows = {}
    for name, bench in benches.items():
        median = statistics.median(bench.times)
        rows[name] = {"ms_per_step": 1e3 * median, "ms_min": 1e3 * min(bench.times), "ms_max": 1e3 * max(bench.times),
                      "chars_per_s": batch * seq_len / median, "gflops": bench.flops / median / 1e9,
                      "peak_mib": bench.peak_memory() / 2**20 if memory else None}
    return rows


def table(rows, title):
    lines = [title, f"{'model':<20}{'ms/step':>9}{'min-max':>15}{'chars/s':>10}{'GFLOP/s':>9}{'peak MiB':>10}"]
    for name, r in rows.items():
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
        lines.append(f"{name:<20}{r['ms_per_step']:>9.1f}{r['ms_min']:>7.1f}-{r['ms_max']:<7.1f}"
                     f"{r['chars_per_s']:>10.0f}{r['gflops']:>9.1f}{peak:>10}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller sweep (under a minute)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("results/bench.json"))
    parser.add_argument("--repeats", type=int, default=21, help="interleaved repeats of each entry (full run)")
    parser.add_argument("--size", type=int, default=512, help="state size of the main table (the paper's: 512)")
    parser.add_argument("--batch", type=int, default=128, help="batch size of the main table (the paper's: 128)")
    parser.add_argument("--modes-only", action="store_true",
                        help="only the drop-in modes (bidirectional, packed), written into --out beside the rest")
    parser.add_argument("--profile", action="store_true",
                        help="only where the fused cores' training step spends its time, written into --out beside the rest")
    return parser.parse_args(argv)


def paper_section(args, device, warmup, repeats):
    """The character models at paper shapes, small batches against upstream, and the scaling sweep."""
    main_rows = run(entries(args.size, kernel=device.type == "cpu"), args.batch, 20, device, warmup, repeats,
                    precisions=("fp32", "bf16"))
    print(table(main_rows, f"Training steps (forward, backward, Adagrad) at paper shapes: batch {args.batch}, 20 characters, "
                           f"state {args.size}"))
    bf16_faster = main_rows["nn.LSTM x2 bf16"]["ms_per_step"] < main_rows["nn.LSTM x2"]["ms_per_step"]
    specs = {name: (entry, reference, CUDA_TARGETS.get(name, target) if device.type == "cuda" else
                    target if bf16_faster or "bf16" not in name else None)
             for name, (entry, reference, target) in RATIOS.items()}
    ratios, ratios_min, targets = ratio_table(main_rows, specs)
    ratios["cerebral_peak_memory_vs_lstm2"] = main_rows["cerebral_lstm"]["peak_mib"] / main_rows["nn.LSTM x2"]["peak_mib"]
    if "cerebral_lstm seq" in main_rows:
        memory = main_rows["cerebral_lstm seq"]["peak_mib"] / main_rows["nn.LSTM x2"]["peak_mib"]
        ratios["cerebral_seq_peak_memory_vs_lstm2"] = memory
        targets["cerebral_seq_peak_memory_vs_lstm2"] = {"target": PEAK_MEMORY_TARGET, "met": memory <= PEAK_MEMORY_TARGET}
    limits = {precision: gemm_limit(args.size, args.batch, 20, device, precision, repeats) for precision in ("fp32", "bf16")}
    print("\nThe GEMM limit: a Cerebral step's matrix products alone, at its shapes (ms, GFLOP/s):")
    for precision, limit in limits.items():
        print(f"  {precision}: {limit['ms']:.1f} ms (min {limit['ms_min']:.1f}), {limit['gflops']:.1f} GFLOP/s")
    small_batch = {}
    if "upstream" in main_rows:
        for batch in (1, 32):
            makers = {name: make for name, make in entries(args.size).items() if name in ("cerebral_lstm", "upstream")}
            rows = run(makers, batch, 20, device, warmup, repeats, memory=False)
            small_batch[batch] = rows
            ratios[f"upstream_vs_cerebral_batch{batch}"] = rows["upstream"]["ms_per_step"] / rows["cerebral_lstm"]["ms_per_step"]
            print("\n" + table(rows, f"Batch {batch}, 20 characters, state {args.size}"))

    print_ratios(ratios, ratios_min, targets)

    sizes, lengths = ((128, 256), (20,)) if args.quick else ((128, 256, 512, 1024), (20, 100))
    if args.size != 512:
        sizes = (args.size,)
    scaling = []
    print("\nScaling, Cerebral against two-layer nn.LSTM (batch 128):")
    print(f"{'state':>6}{'chars':>7}{'cerebral ms':>13}{'nn.LSTM x2 ms':>15}{'ratio':>7}{'cerebral GFLOP/s':>18}")
    for size in sizes:
        for length in lengths:
            makers = {name: make for name, make in entries(size, False).items() if name in ("cerebral_lstm", "nn.LSTM x2")}
            rows = run(makers, 128, length, device, 1, 3 if not args.quick else 2, memory=False)
            c, l2 = rows["cerebral_lstm"], rows["nn.LSTM x2"]
            scaling.append({"state": size, "seq_len": length, "cerebral_ms": c["ms_per_step"],
                            "lstm2_ms": l2["ms_per_step"], "ratio": c["ms_per_step"] / l2["ms_per_step"],
                            "cerebral_gflops": c["gflops"]})
            print(f"{size:>6}{length:>7}{c['ms_per_step']:>13.1f}{l2['ms_per_step']:>15.1f}"
                  f"{c['ms_per_step'] / l2['ms_per_step']:>7.2f}{c['gflops']:>18.1f}")

    return {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
            "size": args.size, "batch": args.batch, "threads": torch.get_num_threads(), "quick": args.quick,
            "paper_shapes": main_rows, "repeats": repeats, "small_batch": small_batch, "ratios": ratios,
            "ratios_min": ratios_min, "targets": targets, "scaling": scaling, "gemm_limit": limits}


def gemm_limit(size, batch, seq_len, device, precision, repeats):
    """The matrix products of one Cerebral training step at paper shapes, timed alone with the
    libraries the fused path uses (cerebral/fused.py's `_linear`: oneDNN in fp32 on a CPU; bf16
    operands in bf16, the head in fp32): ms (median, minimum) and the GFLOP/s they reach, counting
    the whole step's FLOPs as `step_flops` does, so that each row's GFLOP/s compares with it. Timed
    apart from the rows, after them: an estimate of the limit, as noisy as any row."""
    from cerebral.fused import _linear, _packed, _weight_grad

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    rows, gates = batch * seq_len, 8 * size  # 2H cells: 4 x 2H gate columns

    def tensor(*shape):
        return torch.randn(*shape, device=device).to(dtype)
    x, h, d_gates = tensor(rows, size), tensor(batch, size), tensor(rows, gates)
    w_ih, w_hh, d_step = tensor(gates, size), tensor(gates, size), tensor(batch, gates)
    # the head runs in fp32 in either precision (models.CharRNN)
    h_head, w_head, d_logits = (torch.randn(*shape, device=device) for shape in ((rows, size), (VOCAB, size), (rows, VOCAB)))
    w_hh_step, w_hh_t_step, w_ih_t, w_head_t = _packed(w_hh, batch), _packed(w_hh.t().contiguous(), batch), \
        w_ih.t().contiguous(), w_head.t().contiguous()

    def products():
        _linear(x, w_ih)  # the input projection of every step
        for _ in range(seq_len):
            _linear(h, w_hh_step)  # forward, per step
            _linear(d_step, w_hh_t_step)  # backward, per step
        _linear(d_gates, w_ih_t)  # dL/dx
        _weight_grad(d_gates, x)  # dL/dW_ih and dL/dW_hh (the same shapes)
        _weight_grad(d_gates, x)
        _linear(h_head, w_head)  # the head: forward, dL/dh, dL/dW
        _linear(d_logits, w_head_t)
        _weight_grad(d_logits, h_head)
        if device.type == "cuda":
            torch.cuda.synchronize()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        products()
        times.append(time.perf_counter() - start)
    times = times[1:]
    model = CharRNN(VOCAB, CerebralLSTM(size, size, batch_first=True))
    median = statistics.median(times)
    return {"ms": 1e3 * median, "ms_min": 1e3 * min(times), "gflops": step_flops(model, batch, seq_len) / median / 1e9}


def modes_section(args, device, warmup, repeats):
    """The drop-in modes (`run_modes`): rows, ratios and targets."""
    size, max_length = (min(args.size, 128), 30) if args.quick else (args.size, 100)
    rows = run_modes(size, device, warmup, repeats, max_length=max_length)
    print(f"\nDrop-in modes, fp32, core alone (forward and backward): bidirectional at batch 128, 20 steps; packed: "
          f"128 sequences of lengths uniform in 1..{max_length}; state {size}")
    for name, r in rows.items():
        print(f"  {name:<28}{r['ms_per_step']:>9.1f} ms{r['ms_min']:>9.1f}-{r['ms_max']:.1f}")
    ratios, ratios_min, targets = ratio_table(rows, MODE_RATIOS)
    print_ratios(ratios, ratios_min, targets)
    return {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "size": size, "max_length": max_length, "repeats": repeats, "rows": rows, "ratios": ratios,
            "ratios_min": ratios_min, "targets": targets}


# Where an op's own (self) CPU time goes in a training step, for --profile: by its name, except
# that everything under the optimizer's step counts as the optimizer.
GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmm_", "aten::_addmm_activation"}
HEAD_AND_LOSS = {"aten::embedding", "aten::embedding_dense_backward", "aten::_log_softmax", "aten::nll_loss_forward",
                 "aten::_log_softmax_backward_data", "aten::nll_loss_backward", "aten::index_select"}
CASTS = {"aten::copy_", "aten::_to_copy", "aten::clone"}
ALLOCATION = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::zeros", "aten::zeros_like",
              "aten::zero_", "aten::fill_", "aten::new_zeros", "aten::new_empty", "aten::resize_"}
VIEWS = {"aten::slice", "aten::as_strided", "aten::view", "aten::narrow", "aten::split", "aten::transpose", "aten::t",
         "aten::reshape", "aten::select", "aten::chunk", "aten::unsqueeze", "aten::expand", "aten::permute",
         "aten::detach", "aten::_reshape_alias", "aten::unbind", "aten::alias", "aten::squeeze", "aten::to",
         "aten::linear", "aten::matmul", "aten::contiguous", "aten::split_with_sizes", "aten::_unsafe_view"}
PARTS = ("GEMM", "elementwise", "casts and copies", "allocation", "views and dispatch", "optimizer",
         "embedding, head softmax and loss", "autograd and Python")


def part_of(event):
    """The part of a training step an op's own time belongs to (PARTS)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return "optimizer"
        parent = parent.cpu_parent
    name = event.name
    if name in GEMMS or name.startswith("aten::mkldnn") or name.startswith("mkldnn"):
        return "GEMM"
    for part, names in (("embedding, head softmax and loss", HEAD_AND_LOSS), ("casts and copies", CASTS),
                        ("allocation", ALLOCATION), ("views and dispatch", VIEWS)):
        if name in names:
            return part
    if name.startswith(("aten::", "cerebral::")):
        return "elementwise"
    return "autograd and Python"  # autograd Functions, the engine, the optimizer's own frame, ...


PROFILED = ("stacked_lstm", "cerebral_lstm", "stacked_lstm seq", "cerebral_lstm seq", "nn.LSTM x2")


def profile_step(make, batch, device, precision, steps=5):
    """Milliseconds per training step of `make`'s model and the share of each part (PARTS): the
    ops' own CPU time by part, and the rest of the wall time (Python, the interpreter, waits)
    under "autograd and Python"."""
    bench = Bench(make, batch, 20, device, precision)
    for _ in range(2):
        bench.step()
    bench.times.clear()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            bench.step()
    shares = dict.fromkeys(PARTS, 0.0)
    for event in prof.events():
        shares[part_of(event)] += event.self_cpu_time_total / 1e3 / steps
    wall = 1e3 * statistics.median(bench.times)
    shares["autograd and Python"] += max(wall - sum(shares.values()), 0.0)
    return {"ms_per_step": wall, "parts_ms": shares}


def profile_section(args, device):
    """--profile: one training step of each fused core (ATen calls, and on a CPU the sequence
    kernel) and of nn.LSTM x2 in each precision at paper shapes, by part."""
    makers = {name: make for name, make in entries(args.size, include_upstream=False, kernel=device.type == "cpu").items()
              if name in PROFILED}
    rows = {f"{name} {precision}": profile_step(make, args.batch, device, precision)
            for precision in ("fp32", "bf16") for name, make in makers.items()}
    print(f"Where a training step's time goes (ms, profiled, batch {args.batch}, state {args.size}):")
    print(f"{'step':<22}{'wall':>8}" + "".join(f"{part[:14]:>16}" for part in PARTS))
    for name, row in rows.items():
        print(f"{name:<22}{row['ms_per_step']:>8.1f}" + "".join(f"{row['parts_ms'][p]:>16.1f}" for p in PARTS))
    return {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "size": args.size, "batch": args.batch, "rows": rows}


def check_args(args):
    """Exit in one line where the arguments cannot give a benchmark, before the minutes it takes."""
    if min(args.repeats, args.size, args.batch) < 1:
        sys.exit(f"error: --repeats, --size and --batch must be at least 1, got {args.repeats}, {args.size} and {args.batch}")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: PyTorch sees no CUDA device here; use --device cpu (or auto)")
    check_writable(args.out)
    if (args.modes_only or args.profile) and args.out.is_file():
        try:
            return json.loads(args.out.read_text())
        except ValueError:
            sys.exit(f"error: {args.out} cannot be read as a benchmark result (JSON), which --modes-only and --profile add to; "
                     "restore it, or give another --out")
    return {}


def main(argv=None):
    args = parse_args(argv)
    earlier = check_args(args)
    device = resolve_device(args.device)
    warmup, repeats = (1, 3) if args.quick else (2, args.repeats)
    keep_freed_memory()  # as the training loop does; every entry, nn.LSTM included, runs with it
    print(f"{device_name(device)}, torch {torch.__version__}; {repeats} interleaved repeats\n")
    # with --modes-only or --profile the other sections' results stay as they were
    result = earlier
    if args.profile:
        result["profile"] = profile_section(args, device)
    else:
        result = earlier if args.modes_only else paper_section(args, device, warmup, repeats)
        result["modes"] = modes_section(args, device, warmup, repeats)
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"\n-> {args.out}")


if __name__ == "__main__":
    main()
