"""The paper's claims on the published curves and on our runs: `make compare [RUNS=DIR]`.

Prints the claims table, and writes REPORT.md and report.json into the output folder (`results/`
for the default `results/runs`, else the runs folder itself). Everything in the report comes from
the runs' own files (loss.txt, config.yaml, run.json, metrics.csv, sample.json) except the one
"Generated" line, so re-running it on committed runs reproduces it.
"""

import json
from datetime import datetime, timezone
from pathlib import Path

from cerebral import claims
from cerebral.atomic import write_text_atomic
from cerebral.curves import LABELS, comparison_parser, default_out_dir, load_comparison
from cerebral.plots import FIGURES

def fmt(value, digits=4):
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def runs_section(runs):
    lines = ["| model | seed | epochs | device | torch | commit | wall time | key settings |", "|---|---|---|---|---|---|---|---|"]
    for model, model_runs in runs.items():
        for run in model_runs:
            session = (run.record.get("sessions") or [{}])[-1]
            cfg = run.config
            settings = (f"state {cfg['model']['state_size']}, batch {cfg['train']['batch_size']}, "
                        f"{cfg['train']['steps_per_epoch'] or 'pass'} steps/epoch, lr {cfg['optim']['lr']}, "
                        f"init {cfg['model']['init']}") if cfg else "-"
            hours = f"{run.seconds / 3600:.2f} h" if run.seconds is not None else "-"
            commit = (session.get("git_commit") or "-")[:12]
            lines.append(f"| {model} | {run.seed} | {len(run.losses)} | {session.get('device', '-')} | "
                         f"{session.get('torch', '-')} | {commit} | {hours} | {settings} |")
    return "\n".join(lines)


def stats_section(stats):
    lines = ["| model | common epochs | mean abs diff | max abs diff (epoch) | final-loss ratio |", "|---|---|---|---|---|"]
    for model, row in stats.items():
        if "common_epochs" in row:
            lines.append(f"| {model} | {row['common_epochs']} | {row['mean_abs_diff']:.4f} | "
                         f"{row['max_abs_diff']:.4f} ({row['max_abs_diff_epoch']}) | {row['final_ratio']:.4f} |")
    levels = " | ".join(f"loss <= {level}" for level in claims.LEVELS)
    reach = [f"| model | curve | {levels} |", "|---|---|" + "---|" * len(claims.LEVELS)]
    for model, row in stats.items():
        for source in ("published", "ours"):
            epochs = row.get(f"epochs_to_reach_{source}")
            if epochs:
                cells = " | ".join(fmt(epochs[str(level)]) for level in claims.LEVELS)
                reach.append(f"| {model} | {source} ({row[f'epochs_{source}']} epochs) | {cells} |")
    return ("\n".join(lines) if len(lines) > 2 else "No runs of ours to compare yet."), "\n".join(reach)


def report(runs_dir, out_dir, runs, verdicts, stats):
    distance, reach = stats_section(stats)
    figures = [f"- [{title}](figures/{name}.png)" for name, (title, _) in FIGURES.items()
               if (out_dir / "figures" / f"{name}.png").exists()]
    samples = []
    for model, model_runs in runs.items():
        for run in model_runs:
            if run.sample:
                s = run.sample
                samples.append(f"**{LABELS[model]}**, seed {run.seed} (prime {s['prime']!r}, temperature "
                               f"{s['temperature']}, sampling seed {s['seed']}):\n\n```\n{s['text']}\n```")
    rules = "\n".join(f"- {claim}: {rule}" for claim, rule in claims.RULES.items())
    seeds = sorted({r.seed for rs in runs.values() for r in rs})
    parts = [
        "# Cerebral LSTM reproduction: report",
        f"Generated: {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `scripts/compare.py --runs {runs_dir}`",
        "## Our runs",
        (f"Seeds: {', '.join(map(str, seeds))}. With several seeds, the claims use each model's mean curve.\n\n"
         + runs_section(runs)) if runs else "None yet: the claims below use the published curves alone.",
        "## The paper's claims",
        claims.claims_table(verdicts["published"], verdicts.get("ours")),
        f"A verdict needs {claims.PAPER_EPOCHS} epochs of the models it names (C5: the two-stacked curve "
        f"up to {claims.STACKED_EPOCHS}); shorter curves say \"not judgeable yet\". What \"about\" means here:\n\n{rules}",
        "## Distance to the published curves",
        distance,
        "Epochs each curve needs to reach a loss (first epoch at or below it; - : not reached):\n\n" + reach,
    ]
    if figures:
        parts += ["## Figures", "\n".join(figures)]
    if samples:
        parts += ["## Generated text (Table 3 of the paper)", "\n\n".join(samples)]
    return "\n\n".join(parts) + "\n"


def main(argv=None):
    args = comparison_parser(__doc__.splitlines()[0]).parse_args(argv)
    out_dir = args.out or default_out_dir(args.runs)
    published, runs, ours = load_comparison(args.runs, args.data)
    verdicts = {"published": claims.judge_all(published)}
    if ours:
        verdicts["ours"] = claims.judge_all(ours)
    stats = claims.curve_stats(ours, published)

    out_dir.mkdir(parents=True, exist_ok=True)
    text = report(args.runs, out_dir, runs, verdicts, stats)
    write_text_atomic(out_dir / "REPORT.md", text)
    data = {"claims": {k: claims.as_json(v) for k, v in verdicts.items()}, "stats": stats,
            "runs": {m: [{"seed": r.seed, "epochs": len(r.losses), "path": str(r.path.relative_to(args.runs))}
                         for r in rs] for m, rs in runs.items()}}
    write_text_atomic(out_dir / "report.json", json.dumps(data, indent=2) + "\n")
    print(claims.claims_table(verdicts["published"], verdicts.get("ours")))
    print(f"\nReport: {out_dir / 'REPORT.md'} (numbers: {out_dir / 'report.json'})")
    figures = sorted((out_dir / "figures").glob("*.png"))
    if figures:
        print("Figures:\n" + "\n".join(f"  {p}" for p in figures))


if __name__ == "__main__":
    main()
