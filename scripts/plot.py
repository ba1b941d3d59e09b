"""The paper's figures from the published curves and our runs: `make figures [RUNS=DIR]`.

Writes Figs. 12-14 and an overview, PNG and PDF, into <out>/figures (`results/figures` for the
default `results/runs`). Works with the published curves alone, our runs alone, or both.
"""

import argparse
import sys
from pathlib import Path

from cerebral.curves import DEFAULT_RUNS, default_out_dir, find_runs, mean_curve, published_curves
from cerebral.data import DEFAULT_DIR, DataError
from cerebral.losslog import LossFileError
from cerebral.plots import write_figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="folder of <model>/seed<seed>/ runs")
    parser.add_argument("--out", type=Path, help="figures go to OUT/figures (default: see above)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DIR, help="the fetched data folder")
    parser.add_argument("--logy", action="store_true", help="log-scale loss axis (files end in _log)")
    args = parser.parse_args(argv)
    try:
        published = published_curves(args.data)
        runs = find_runs(args.runs)
    except (DataError, LossFileError) as e:
        sys.exit(f"error: {e}")
    ours = {model: mean_curve(model_runs) for model, model_runs in runs.items()}
    seeds = sorted({r.seed for rs in runs.values() for r in rs})
    label = "ours" if len(seeds) <= 1 else f"ours, mean of seeds {','.join(map(str, seeds))}"
    paths = write_figures((args.out or default_out_dir(args.runs)) / "figures", ours, published, args.logy, label)
    print("Figures (PNG and PDF):\n" + "\n".join(f"  {p}" for p in paths))


if __name__ == "__main__":
    main()
