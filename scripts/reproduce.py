"""Train the paper's three models one after another (`make reproduce ARGS="key=value ..."` runs
this, then the figures and the claims report).

Prints the plan and an estimate timed on this device first. The two-stacked model runs 791
epochs, as its published file, because claim C5 (it needs ~678 epochs to reach Cerebral's
500-epoch loss) rests on them; ARGS come last, so `train.epochs=20` shortens every run.
"""

import cerebral  # noqa: F401  first: it sets OpenMP's wait policy before torch loads

# isort: split
import argparse
import statistics
import sys
from pathlib import Path

import torch

from cerebral import data as chardata
from cerebral import rundir
from cerebral.config import check_config, compose
from cerebral.cores import use_backend
from cerebral.elementwise import kernel_ops, use_elementwise
from cerebral.errors import USER_ERRORS
from cerebral.generate import generate_for_run
from cerebral.models import build_model
from cerebral.precision import speed_warning
from cerebral.steps import (
    BatchSampler,
    device_name,
    keep_freed_memory,
    make_optimizer,
    resolve_device,
    timed_train_step,
)
from cerebral.tasks import char_lm_loss, decide_kernels
from cerebral.train import train

RUNS = [("single_lstm", []), ("stacked_lstm", ["train.epochs=791"]), ("cerebral_lstm", [])]


def seconds_per_step(cfg, vocab_size, seq_len, repeats=3):
    """Median time of a training step at `cfg`'s sizes on its device, after one warm-up step."""
    device = resolve_device(cfg.device)
    model = use_backend(use_elementwise(build_model(cfg.model, vocab_size), cfg.train.elementwise),
                        cfg.train.backend).to(device)
    optimizer = make_optimizer(cfg.optim, model.parameters())
    tokens = torch.randint(0, vocab_size, (cfg.train.batch_size, seq_len), device=device)
    times = [timed_train_step(model, optimizer, char_lm_loss, tokens, tokens, precision=cfg.train.precision)
             for _ in range(repeats + 1)]
    return statistics.median(times[1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. train.epochs=20")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and estimate, train nothing")
    args = parser.parse_args(argv)

    try:
        configs = [compose(f"model={m}", *extra, *args.overrides) for m, extra in RUNS]
        for cfg in configs:
            check_config(cfg)
        if configs[0].task.name != "charlm":
            sys.exit(f"error: reproduce trains the paper's character models; task={configs[0].task.name} runs with "
                     f"make task TASK={configs[0].task.name}")
        if len({cfg.out_dir for cfg in configs}) < len(configs):
            sys.exit(f"error: the three runs would share out_dir={configs[0].out_dir} (an out_dir= or model= "
                     "override); give runs_dir=DIR, under which each model gets its own folder")
        for cfg in configs:
            rundir.resume_kernels(cfg)
            rundir.check_run_dir(cfg)  # every run folder before any trains: a refusal costs no hours
        data = chardata.load(configs[0].data.dir, configs[0].data.seq_len)
        for cfg in configs:
            decide_kernels(cfg)
        if any(cfg.train.elementwise != "aten" for cfg in configs):
            kernel_ops()  # built before the plan times its steps
        # where each run goes on: its checkpoint's epochs; epochs recorded past them train again
        done = [rundir.checkpoint_epochs(cfg.out_dir, build_model(cfg.model, data.vocab_size)) for cfg in configs]
        recorded = [rundir.recorded_epochs(cfg.out_dir) for cfg in configs]
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")

    device, precision = resolve_device(configs[0].device), configs[0].train.precision
    keep_freed_memory()  # as the training loop does, so the estimate times its steps
    warning = speed_warning(precision, device)
    if warning:
        print(warning)
    print(f"Plan on {device_name(device)}, {precision} (step times measured now):")
    print(f"{'model':<15}{'elementwise':>12}{'epochs':>8}{'done':>6}{'steps/epoch':>13}{'s/step':>8}{'estimate':>11}"
          "  out_dir")
    total = 0.0
    for cfg, epochs_done in zip(configs, done, strict=True):
        steps = BatchSampler(len(data.inputs), cfg.train, cfg.seed).steps
        remaining = max(cfg.train.epochs - epochs_done, 0) * steps
        per_step = seconds_per_step(cfg, data.vocab_size, data.inputs.shape[1]) if remaining else 0.0
        total += remaining * per_step
        print(f"{cfg.model.name:<15}{cfg.train.elementwise:>12}{cfg.train.epochs:>8}{epochs_done:>6}{steps:>13}"
              f"{per_step:>8.3f}{remaining * per_step / 3600:>10.2f}h  {cfg.out_dir}")
    print(f"{'total':<62}{total / 3600:>10.2f}h", flush=True)
    for cfg, epochs_done, epochs_recorded in zip(configs, done, recorded, strict=True):
        last = min(epochs_recorded, cfg.train.epochs) - 1
        if last >= epochs_done:
            print(f"{cfg.model.name}: loss.txt records {epochs_recorded} epochs, the checkpoint {epochs_done}: "
                  f"epochs {epochs_done}-{last} train again, each checked against the record")
    if args.plan_only:
        return
    try:
        for cfg in configs:
            train(cfg)
            generate_for_run(cfg.out_dir, save=True)  # one text sample per model, for the report
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")
    print("Loss files (published format):")
    for cfg in configs:
        print(f"  {cfg.model.name:<15} {Path(cfg.out_dir) / 'loss.txt'}")


if __name__ == "__main__":
    main()
