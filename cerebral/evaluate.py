"""A trained character model's loss on fixed batches: `python -m cerebral.evaluate RUN_DIR [--precision bf16]`.

The batches are FIXED_BATCHES x BATCH_SIZE training sequences drawn with seed SEED, the same for
every run and machine, so that a number can be checked later against the record (and bf16 against
fp32 on one model: scripts/late_precision.py evaluate). Prints it beside the run's recorded final
training loss, which averages an epoch of a still-changing model and so differs from it a little.
"""

import argparse
import sys
from pathlib import Path

import torch

from cerebral import rundir
from cerebral.errors import USER_ERRORS, ConfigError
from cerebral.generate import load_trained
from cerebral.precision import PRECISIONS, autocast
from cerebral.tasks import char_lm_loss, make_task

FIXED_BATCHES, BATCH_SIZE, SEED = 20, 128, 1234


@torch.no_grad()
def fixed_batch_loss(run_dir, precision="fp32"):
    """The run's final model's mean loss on the fixed batches, its forward at `precision` (CPU)."""
    model, _ = load_trained(run_dir)
    task = make_task(rundir.saved_config(run_dir))
    needed = FIXED_BATCHES * BATCH_SIZE
    if len(task) < needed:
        raise ConfigError(f"{run_dir}: its data give {len(task)} training sequences, and the fixed batches take "
                          f"{needed}: evaluate a run whose data.seq_len leaves at least that many")
    order = torch.randperm(len(task), generator=torch.Generator().manual_seed(SEED))
    batches = order[: FIXED_BATCHES * BATCH_SIZE].view(FIXED_BATCHES, -1)
    with autocast(precision, "cpu"):
        losses = [char_lm_loss(model, task.inputs[b], task.targets[b]).item() for b in batches]
    return sum(losses) / len(losses)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a character model's run folder, with its checkpoint")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    args = parser.parse_args(argv)
    try:
        recorded = rundir.read_history(args.run, rundir.METRICS_COLUMNS)  # a malformed record: before the work
        loss = fixed_batch_loss(args.run, args.precision)
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")
    final = f"{recorded[-1]['train_loss']:.5f} (epoch {len(recorded) - 1})" if recorded else "-"
    print(f"{args.run}: loss {loss:.5f} on {FIXED_BATCHES} fixed batches of {BATCH_SIZE} ({args.precision}); "
          f"recorded final training loss {final}")


if __name__ == "__main__":
    main()
