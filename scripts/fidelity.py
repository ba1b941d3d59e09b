"""How far runs in another precision lie from their fp32 twins, and from the published curves:

    python scripts/fidelity.py --runs results/paper-bf16 --reference results/paper-cpu

Prints the table and writes it to FIDELITY.md in the runs folder, or to --out (`cerebral.report.fidelity`
holds the bounds: mean |bf16 - fp32| <= 0.01, 0.03 for the two-stacked model with its first
epoch at or below 3.0 within 3 epochs, and each distance to the published curve within 0.01;
`--bound` sets the mean bound of every model, e.g. 1e-3 for the sequence kernel's runs).
"""

import argparse
import math
import shlex
import sys
from pathlib import Path

from cerebral import data as chardata
from cerebral.atomic import write_text_atomic
from cerebral.curves import load_comparison, make_output_folder
from cerebral.report import fidelity, fidelity_table, parameter_counts, runs_section


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="the runs to judge (e.g. bf16)")
    parser.add_argument("--reference", type=Path, required=True, help="their fp32 twins")
    parser.add_argument("--data", type=Path, default=chardata.DEFAULT_DIR)
    parser.add_argument("--name", default="bf16")
    parser.add_argument("--reference-name", default="fp32")
    parser.add_argument("--out", type=Path, help="where the table goes (default: RUNS/FIDELITY.md)")
    parser.add_argument("--bound", type=float,
                        help="the mean |runs - reference| every model must stay within (default: per model, 0.01 or "
                             "0.03 for the two-stacked one), e.g. 1e-3 for a kernel against the curves it replaces")
    args = parser.parse_args(argv)
    published, runs, ours = load_comparison(args.runs, args.data, need_runs=True)
    _, reference_runs, reference = load_comparison(args.reference, args.data, need_runs=True)
    if not (compared := set(ours) & set(reference)):
        sys.exit(f"error: no model has runs in both {args.runs} ({', '.join(sorted(ours))}) and {args.reference} "
                 f"({', '.join(sorted(reference))}); compare folders of the same models")
    out = args.out or args.runs / "FIDELITY.md"
    if out.is_dir():
        sys.exit(f"error: --out {out} is a folder: give the file to write, e.g. --out {out / 'FIDELITY.md'}")
    make_output_folder(out.parent)
    if args.bound is not None and not 0 < args.bound < math.inf:
        sys.exit(f"error: --bound must be a positive finite number, got {args.bound}")
    table = fidelity_table(fidelity(ours, reference, published, args.bound), args.name, args.reference_name)
    command = shlex.join(["python", "scripts/fidelity.py", *(sys.argv[1:] if argv is None else argv)])
    # the records list the compared models only
    runs, reference_runs = ({model: found[model] for model in found if model in compared} for found in (runs, reference_runs))
    records = "\n\n".join(f"{title} ({folder}):\n\n{runs_section(found, parameter_counts(found, args.data))}"
                            for title, folder, found in ((args.name, args.runs, runs),
                                                         (args.reference_name, args.reference, reference_runs)))
    text = (f"# {args.name} against {args.reference_name}\n\n`{command}`: {args.runs} against {args.reference}, "
            f"over their common epochs.\n\n{table}\n\nThe runs (each one's last training session):\n\n{records}\n")
    write_text_atomic(out, text)
    print(table)


if __name__ == "__main__":
    main()
