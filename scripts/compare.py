"""The paper's claims on the published curves and on our runs: `make compare [RUNS=DIR]`.

Prints the claims table (or, for classification runs, the accuracy per core) and writes
REPORT.md and report.json (`cerebral/report.py`) into the output folder: `results/` for the
default `results/runs`, else the runs folder itself.
"""

from cerebral.curves import comparison_parser, default_out_dir
from cerebral.report import write_report


def main(argv=None):
    args = comparison_parser(__doc__.splitlines()[0]).parse_args(argv)
    out_dir = args.out or default_out_dir(args.runs)
    print(write_report(args.runs, out_dir, args.data))
    print(f"\nReport: {out_dir / 'REPORT.md'} (numbers: {out_dir / 'report.json'})")
    figures = sorted((out_dir / "figures").glob("*.png"))
    if figures:
        print("Figures:\n" + "\n".join(f"  {p}" for p in figures))


if __name__ == "__main__":
    main()
