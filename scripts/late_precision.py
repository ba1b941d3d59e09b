"""How much bf16 moves a curve late in training, where the paper's claims are decided:

    python scripts/late_precision.py continue ~/runs/cerebral_epoch480 --epochs 10 --out results/late-precision
    python scripts/late_precision.py evaluate results/paper/*/seed0

`continue` trains a saved run on from its checkpoint for --epochs more epochs, once in fp32 and
once in bf16, into OUT/fp32 and OUT/bf16 (the same state, the same batches), and prints both
curves and their difference. `evaluate` computes each run's loss on the same fixed batches
(cerebral/evaluate.py: 20 x 128 sequences drawn with seed 1234) in fp32 and in bf16. Both write a markdown table
(OUT/LATE.md for continue; with --out, OUT/EVALUATE.md for evaluate).
"""

import cerebral  # noqa: F401  first: it sets OpenMP's wait policy before torch loads

# isort: split
import argparse
import shutil
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from cerebral import rundir
from cerebral.atomic import write_text_atomic
from cerebral.curves import check_writable
from cerebral.errors import USER_ERRORS
from cerebral.evaluate import fixed_batch_loss
from cerebral.precision import PRECISIONS
from cerebral.steps import cpu_features, device_name
from cerebral.train import train


def continuations(source, epochs, out):
    """{precision: the config that trains the source's checkpoint on for `epochs` epochs into
    OUT/precision}, and the epoch they start from; every folder is checked before either trains."""
    state = rundir.read_checkpoint(Path(source) / rundir.CHECKPOINT)
    start = len(state["history"])
    configs = {}
    for precision in PRECISIONS:
        cfg = rundir.saved_config(source)
        OmegaConf.update(cfg, "train.precision", precision)
        OmegaConf.update(cfg, "train.epochs", start + epochs)
        OmegaConf.update(cfg, "out_dir", str(out / precision))
        rundir.check_run_dir(cfg)
        configs[precision] = cfg
    return configs, start


def continue_in_each_precision(source, configs, start):
    """{precision: losses of the epochs trained after the source's checkpoint}."""
    curves = {}
    for precision, cfg in configs.items():
        run_dir = Path(cfg.out_dir)
        if not (run_dir / rundir.CHECKPOINT).exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(source) / rundir.CHECKPOINT, run_dir / rundir.CHECKPOINT)
            write_text_atomic(run_dir / rundir.CONFIG, OmegaConf.to_yaml(cfg))
        curves[precision] = train(cfg)[start:]
    return curves


def machine():
    """Where the numbers came from: bf16 rounding is the CPU's kernels' own, so name the CPU."""
    return f"on {device_name(torch.device('cpu'))} ({cpu_features()}) at commit {(rundir.git_commit() or '-')[:12]}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cont = commands.add_parser("continue", help="train a saved run on in fp32 and in bf16")
    cont.add_argument("source", type=Path, help="a run folder (or a copy of one) with its checkpoint")
    cont.add_argument("--epochs", type=int, default=10)
    cont.add_argument("--out", type=Path, required=True)
    evaluate = commands.add_parser("evaluate", help="each run's final loss on fixed batches in fp32 and bf16")
    evaluate.add_argument("runs", type=Path, nargs="+")
    evaluate.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "continue" and args.epochs < 1:
        sys.exit(f"error: --epochs must be at least 1, got {args.epochs}")
    name = "LATE.md" if args.command == "continue" else "EVALUATE.md"
    if args.out:
        check_writable(args.out / name)
    try:
        if args.command == "continue":
            configs, start = continuations(args.source, args.epochs, args.out)
            curves = continue_in_each_precision(args.source, configs, start)
            lines = [f"Trained from epoch {start} of {args.source} {machine()}.", "",
                     "| epoch | fp32 | bf16 | bf16 - fp32 |", "|---|---|---|---|"]
            for i, (a, b) in enumerate(zip(curves["fp32"], curves["bf16"], strict=True)):
                lines.append(f"| {start + i} | {a:.5f} | {b:.5f} | {b - a:+.1e} |")
            table = "\n".join(lines)
        else:
            lines = [f"Evaluated {machine()}.", "",
                     "| run | fp32 | bf16 | bf16 - fp32 |", "|---|---|---|---|"]
            for run in args.runs:
                a, b = (fixed_batch_loss(run, precision) for precision in PRECISIONS)
                lines.append(f"| {run} | {a:.5f} | {b:.5f} | {b - a:+.1e} |")
            table = "\n".join(lines)
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")
    print(table)
    if args.out:
        command = " ".join(map(str, sys.argv[1:] if argv is None else argv))
        write_text_atomic(args.out / name, f"`python scripts/late_precision.py {command}`\n\n{table}\n")


if __name__ == "__main__":
    main()
