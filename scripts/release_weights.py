"""Commit a run's final weights: `python scripts/release_weights.py results/paper/*/seedS --manifest results/paper`.

Writes model.pt (fp32 weights and vocabulary, no optimizer state; cerebral.rundir.write_model) from
each run's checkpoint, then MANIFEST.sha256 in the --manifest folder, listing every model.pt below
it with its SHA-256. Sampling, export and evaluation then work on a clone without checkpoints.
"""

import argparse
import sys
from pathlib import Path

from cerebral import rundir
from cerebral.errors import USER_ERRORS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders, each with its checkpoint.pt")
    parser.add_argument("--manifest", type=Path, required=True, help="the folder whose MANIFEST.sha256 lists them")
    args = parser.parse_args(argv)
    outside = [run for run in args.runs if not run.resolve().is_relative_to(args.manifest.resolve())]
    if outside:
        sys.exit(f"error: {outside[0]} is not below --manifest {args.manifest}, whose manifest must list it")
    try:
        states = [rundir.read_checkpoint(run / rundir.CHECKPOINT) for run in args.runs]  # all, before writing any
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")
    for run, state in zip(args.runs, states, strict=True):
        rundir.write_model(run, state)
        print(f"{run / rundir.MODEL}: {len(state['history'])} epochs")
    rundir.write_manifest(args.manifest)
    print(f"-> {args.manifest / rundir.MANIFEST}")


if __name__ == "__main__":
    main()
