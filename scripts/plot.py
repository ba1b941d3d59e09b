"""The paper's figures from the published curves and our runs: `make figures [RUNS=DIR]`.

Writes Figs. 12-14 and an overview, PNG and PDF, into <out>/figures (`results/figures` for the
default `results/runs`), and with runs of ours their difference to the published curves (see
`cerebral/plots.py` for the rest). Works with the published curves alone (the default folder,
before any run), our runs alone, or both; with several seeds, each model's mean with the seeds'
range as a band.
"""

from cerebral.curves import comparison_parser, default_out_dir, load_comparison, make_output_folder, run_task, seeds_of
from cerebral.plots import write_figures, write_task_figures


def main(argv=None):
    parser = comparison_parser(__doc__.splitlines()[0])
    parser.add_argument("--logy", action="store_true", help="log-scale loss axis (files end in _log)")
    args = parser.parse_args(argv)
    published, runs, _ = load_comparison(args.runs, args.data)
    seeds = seeds_of(runs)
    label = "ours" if len(seeds) <= 1 else f"ours, mean of seeds {','.join(map(str, seeds))}"
    out = make_output_folder((args.out or default_out_dir(args.runs)) / "figures")
    if run_task(runs) != "charlm":
        paths = write_task_figures(out, runs, args.logy)
    else:
        paths = write_figures(out, runs, published, args.logy, label)
    print("Figures (PNG and PDF):\n" + "\n".join(f"  {p}" for p in paths))


if __name__ == "__main__":
    main()
