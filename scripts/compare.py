"""The paper's claims on the published curves and on our runs: `make compare [RUNS=DIR]`.

Prints the claims table (or, for classification runs, the accuracy per core) and writes
REPORT.md and report.json (`cerebral/report.py`) into the output folder: `results/` for the
default `results/runs`, else the runs folder itself.

With --validation EPOCHS (e.g. 10,20,30): RUNS is a validation sweep of a classification task,
RUNS/lr<lr>/<model>/seed<k>/ trained with data.validation=true; writes VALIDATION.md (into --out,
default RUNS) with the validation accuracies and the number of epochs (of EPOCHS) and learning rate
they choose.
"""

import sys

from cerebral.curves import comparison_parser, default_out_dir
from cerebral.errors import ConfigError
from cerebral.report import VALIDATION, validation_report, write_report


def epoch_counts(text):
    """--validation's EPOCHS as a list of positive integers (each once), or exit in one line (argparse's
    own refusal would add its usage)."""
    counts = text.split(",")
    if not all(count.isdecimal() and int(count) > 0 for count in counts):
        sys.exit(f"error: --validation must be comma-separated positive epoch counts, e.g. 10,20,30; got {text!r}")
    return list(dict.fromkeys(int(count) for count in counts))


def main(argv=None):
    parser = comparison_parser(__doc__.splitlines()[0])
    parser.add_argument("--validation", metavar="EPOCHS", type=epoch_counts, help="comma-separated numbers of epochs "
                        "to choose among: RUNS is a validation sweep, lr<lr>/<model>/seed<k>/; writes VALIDATION.md into "
                        "--out (default RUNS)")
    args = parser.parse_args(argv)
    if args.validation:
        try:
            chosen = validation_report(args.runs, args.validation, args.out)["chosen"]
        except (ValueError, ConfigError) as e:
            sys.exit(f"error: {e}")
        print(f"train.epochs={chosen['epochs']} optim.lr={chosen['lr']} (mean validation accuracy "
              f"{chosen['mean_val_accuracy']:.2%}): {(args.out or args.runs) / VALIDATION}")
        return
    out_dir = args.out or default_out_dir(args.runs)
    print(write_report(args.runs, out_dir, args.data))
    print(f"\nReport: {out_dir / 'REPORT.md'} (numbers: {out_dir / 'report.json'})")
    figures = sorted((out_dir / "figures").glob("*.png"))
    if figures:
        print("Figures:\n" + "\n".join(f"  {p}" for p in figures))


if __name__ == "__main__":
    main()
