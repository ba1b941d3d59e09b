"""The comparison report of a runs folder (`make compare RUNS=DIR`, `scripts/compare.py`).

For the character models: the paper's claims judged on the published curves and on our runs,
each run's record (device, precision, seed, commit, settings, wall time), each model's loss at its
last epoch over seeds beside the published curve, each claim's number and
margins seed by seed, the distance to the published curves (also per seed) and between seeds,
held-out loss, figures and generated text. For a folder of classification runs
(task=digits|mnist|imdb|mnist1d|japanese_vowels): test accuracy per core and seed, the task's
published reference numbers (its config's `task.reference`) in rows of their own, and whether the
Cerebral LSTM beats the single LSTM of equal parameters; for a validation sweep (VALIDATION.md),
the number of epochs and learning rate it chooses. Everything in the report comes from the runs'
own files except the one "Generated" line, so re-running it on committed runs reproduces it.
"""

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import torch

from cerebral import claims
from cerebral import data as chardata
from cerebral.atomic import write_text_atomic
from cerebral.config import complete
from cerebral.curves import (
    band,
    find_runs,
    label,
    load_comparison,
    make_output_folder,
    mean_curve,
    run_task,
    seeds_of,
    sweep_folders,
)
from cerebral.errors import ConfigError
from cerebral.models import build_model, parameter_count
from cerebral.plots import FIGURES


def fmt(value, digits=4):
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def fmt_difference(value):
    """A difference with 4 decimals, or with 2 significant digits in scientific notation below 1e-3,
    where 4 decimals would print 0.0000 for a difference of 2e-8."""
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.1e}"


def fmt_float(value, digits):
    """A number with `digits` decimals even where it is an int (a mean of epochs), "-" for None."""
    return fmt(None if value is None else float(value), digits)


def generated(runs_dir):
    """The report's one line that is not a function of the runs' files."""
    return f"Generated: {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `scripts/compare.py --runs {runs_dir}`"


def figure_links(out_dir, titles):
    """Markdown links to those of the figures {name: title} that exist in out_dir/figures."""
    return [f"- [{title}](figures/{name}.png)" for name, title in titles.items()
            if (out_dir / "figures" / f"{name}.png").exists()]


def count(n):
    return "-" if n is None else f"{n:,}"


def parameters(run, vocab_size):
    """The run's parameter count: as recorded in run.json, else rebuilt (without memory) from its config."""
    if run.parameters is None and run.config:
        with torch.device("meta"):
            return parameter_count(build_model(complete(run.config).model, vocab_size))
    return run.parameters


def parameter_counts(runs, data_dir):
    """{model: parameter count} of character-model runs (the vocabulary size from the data's metadata)."""
    vocab_size = len(chardata.load_metadata(chardata.verified_path(data_dir, "data/metadata.pkl"))["idx2ch"])
    return {model: parameters(model_runs[0], vocab_size) for model, model_runs in runs.items()}


def device(session):
    """The session's device, on a CPU with the family, model and bf16 flags that set its bit patterns."""
    name = session.get("device", "-")
    return f"{name} ({session['cpu']})" if session.get("cpu") else name


def runs_section(runs, counts):
    lines = ["| model | parameters | seed | epochs | device | precision | torch | commit | wall time | key settings |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, model_runs in runs.items():
        for run in model_runs:
            session = run.session
            cfg = run.config
            settings = (f"state {cfg['model']['state_size']}, batch {cfg['train']['batch_size']}, "
                        f"{cfg['train']['steps_per_epoch'] or 'pass'} steps/epoch, lr {cfg['optim']['lr']}, "
                        f"init {cfg['model']['init']}") if cfg else "-"
            hours = f"{run.seconds / 3600:.2f} h" if run.seconds is not None else "-"
            commit = (session.get("git_commit") or "-")[:12]
            lines.append(f"| {model} | {count(counts[model])} | {run.seed} | {len(run.losses)} | {device(session)} | "
                         f"{run.precision} | {session.get('torch', '-')} | {commit} | {hours} | {settings} |")
    return "\n".join(lines)


def last_epoch(runs, published):
    """Per model: the training loss at the last epoch all its seeds have, its mean, sample SD and
    range over seeds, and the published curve of that model at that epoch (None where it has none)."""
    rows = {}
    for model, model_runs in runs.items():
        epoch = min(len(run.losses) for run in model_runs) - 1  # find_runs keeps only non-empty curves
        losses = [run.losses[epoch] for run in model_runs]
        reference = published.get(model, [])
        at_epoch = reference[epoch] if epoch < len(reference) else None
        mean, sd = claims.mean_sd(losses)
        rows[model] = {"seeds": len(losses), "epoch": epoch, "mean": mean, "sd": sd, "min": min(losses),
                       "max": max(losses), "published": at_epoch,
                       "difference": None if at_epoch is None else mean - at_epoch}
    return rows


def last_epoch_section(rows):
    lines = ["| model | seeds | epoch | loss: mean | SD | min-max | published | ours - published |",
             "|---|---|---|---|---|---|---|---|"]
    for model, r in rows.items():
        difference = "-" if r["difference"] is None else f"{r['difference']:+.5f}"
        lines.append(f"| {model} | {r['seeds']} | {r['epoch']} | {r['mean']:.5f} | {fmt(r['sd'], 5)} | "
                     f"{r['min']:.5f}-{r['max']:.5f} | {fmt(r['published'], 5)} | {difference} |")
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


def held_out(runs):
    """Per model with held-out loss: its last epoch's mean and range over seeds, and the best epoch."""
    rows = {}
    for model, model_runs in runs.items():
        curve = mean_curve(model_runs, "val_loss")
        if curve:
            finals = [r.metric("val_loss")[len(curve) - 1] for r in model_runs]
            best = min(range(len(curve)), key=curve.__getitem__)
            rows[model] = {"epochs": len(curve), "seeds": len(model_runs), "final": curve[-1], "final_min": min(finals),
                           "final_max": max(finals), "final_bpc": curve[-1] / math.log(2), "best_epoch": best,
                           "best": curve[best], "train_final": mean_curve(model_runs)[len(curve) - 1]}
            rows[model]["gap"] = rows[model]["final"] - rows[model]["train_final"]
    return rows


def held_out_section(rows):
    lines = ["| model | seeds | epochs | held-out loss, last epoch (min-max) | bits/char | training loss, last epoch | "
             "held-out - training, last epoch | best held-out (epoch) |", "|---|---|---|---|---|---|---|---|"]
    for model, r in rows.items():
        lines.append(f"| {model} | {r['seeds']} | {r['epochs']} | {r['final']:.4f} ({r['final_min']:.4f}-{r['final_max']:.4f}) "
                     f"| {r['final_bpc']:.4f} | {r['train_final']:.4f} | {r['gap']:+.4f} | {r['best']:.4f} ({r['best_epoch']}) |")
    return "\n".join(lines)


def versus(cerebral, other, cerebral_epoch, other_epoch):
    """'A (epoch i) against B (epoch j), Cerebral's D lower': 'lower' or 'higher' as the numbers fall."""
    head = f"{cerebral:.4f} (epoch {cerebral_epoch}) against {other:.4f} (epoch {other_epoch}), "
    if cerebral == other:
        return head + "the same"
    return head + f"Cerebral's {abs(cerebral - other):.4f} {'lower' if cerebral < other else 'higher'}"


def held_out_comparison(rows):
    """Cerebral's held-out loss against each other model present (the single LSTMs, the learned
    projection, ...), at the last and at the best epoch ("" without Cerebral): the sentence follows
    the numbers, whichever way they fall."""
    if "cerebral_lstm" not in rows:
        return ""
    c = rows["cerebral_lstm"]
    return " ".join(f"Cerebral LSTM against {label(m)}, held-out loss (mean over seeds): at the last epoch "
                    f"{versus(c['final'], o['final'], c['epochs'] - 1, o['epochs'] - 1)}; at each model's best epoch "
                    f"{versus(c['best'], o['best'], c['best_epoch'], o['best_epoch'])}."
                    for m, o in rows.items() if m != "cerebral_lstm")


SEEDS_STUDY = Path(__file__).resolve().parents[1] / "results" / "studies" / "seeds"


def seed_spread(runs):
    """Per model with several seeds: the largest (highest - lowest) over its seeds' curves at any
    common epoch, that epoch, and the number of seeds and common epochs."""
    spread = {}
    for model, model_runs in runs.items():
        lowest_highest = band(model_runs)
        if lowest_highest:
            gaps = [hi - lo for lo, hi in zip(*lowest_highest, strict=True)]
            worst = max(range(len(gaps)), key=gaps.__getitem__)
            spread[model] = {"largest": gaps[worst], "epoch": worst, "seeds": len(model_runs), "epochs": len(gaps)}
    return spread


def seed_columns(seeds):
    return " | ".join(f"seed {seed}" for seed in seeds)


def claim_values_section(values, seeds):
    """Each claim's number on each seed's own curves, with their mean and SD."""
    if all(x is None for row in values.values() for x in row["per_seed"].values()):
        return "No claim has a number on any seed yet: each needs 500 epochs of the models it names."
    lines = [f"| claim | number | {seed_columns(seeds)} | seeds with a number | mean | SD |",
             "|---|---|" + "---|" * (len(seeds) + 3)]
    for claim, row in values.items():
        digits = 5 if claim == "C4" else 1  # a loss, else an epoch or a count of epochs
        cells = " | ".join(fmt(row["per_seed"][seed], digits) for seed in seeds)
        lines.append(f"| {claim} | {claims.NUMBERS[claim]} | {cells} | {row['seeds']} | "
                     f"{fmt_float(row['mean'], digits)} | {fmt_float(row['sd'], digits)} |")
    return "\n".join(lines)


def margins_section(margins, seeds):
    """The claims' margins paired by seed at fixed epochs, with their t-intervals."""
    if not margins:
        return "No seed's curves reach the epochs the margins are taken at yet."
    lines = [f"| claim | difference | epoch | {seed_columns(seeds)} | seeds | mean | ± (95%) |",
             "|---|---|---|" + "---|" * (len(seeds) + 3)]
    for claim, by_epoch in margins.items():
        model, other, _ = claims.MARGINS[claim]
        for epoch, row in by_epoch.items():
            cells = " | ".join(fmt(row["per_seed"].get(seed)) for seed in seeds)
            lines.append(f"| {claim} | {label(model)} - {label(other)} | {epoch} | {cells} | {len(row['per_seed'])} | "
                         f"{row['mean']:.4f} | {fmt(row['half_width'])} |")
    return "\n".join(lines)


def seed_distances(runs, published):
    """model -> seed -> that seed's distance to the published curve, over the epochs both have."""
    return {m: {r.seed: claims.distance(r.losses, published[m]) for r in rs} for m, rs in runs.items() if m in published}


def seed_distance_section(distances):
    lines = ["| model | seed | common epochs | mean abs diff | max abs diff (epoch) |", "|---|---|---|---|---|"]
    for model, by_seed in distances.items():
        for seed, d in by_seed.items():
            lines.append(f"| {model} | {seed} | {d['common_epochs']} | {d['mean_abs_diff']:.4f} | "
                         f"{d['max_abs_diff']:.4f} ({d['max_abs_diff_epoch']}) |")
    return "\n".join(lines)


def spread_section(spread):
    if not spread:
        return "Every model has one seed here: there is no spread between seeds to measure."
    lines = ["| model | seeds | common epochs | largest gap between seeds (epoch) |", "|---|---|---|---|"]
    lines += [f"| {m} | {r['seeds']} | {r['epochs']} | {r['largest']:.4f} ({r['epoch']}) |" for m, r in spread.items()]
    return "\n".join(lines)


def seed_numbers(runs, published):
    """The per-seed numbers of the report: the last epoch's loss, each claim's number, the margins,
    distances and spread."""
    return {"last_epoch": last_epoch(runs, published),
            "claim_values": claims.claim_values(claims.judge_per_seed(runs)), "margins": claims.margins(runs),
            "distance_per_seed": seed_distances(runs, published), "seed_spread": seed_spread(runs)}


def single_seed_note(study=SEEDS_STUDY):
    """What one seed can say: the seed-to-seed spread measured in the seeds study, if it is there."""
    text = "Each verdict on our runs rests on one run (one seed) per model."
    spread = seed_spread(find_runs(study)) if study.is_dir() else {}
    if spread:
        parts = [f"{label(m)} {r['largest']:.3f} (epoch {r['epoch']})" for m, r in spread.items()]
        first = next(iter(spread.values()))
        text += (f" How far another seed moves a curve, from the seeds study (`results/studies/seeds`, "
                 f"{first['seeds']} seeds, the first {first['epochs']} epochs): the largest gap between seeds at any "
                 f"epoch is {', '.join(parts)}. A claim decided by less than that could go the other way with "
                 f"another seed; late in training the spread has not been measured.")
    return text


def report(runs_dir, out_dir, runs, verdicts, stats, counts, per_seed, numbers):
    distance, reach = stats_section(stats)
    figures = figure_links(out_dir, {**{name: title for name, (title, _) in FIGURES.items()},
                                     "difference": "Ours minus published, per model (band: the seeds' range)",
                                     "study": "Our runs over their own epochs", "held_out": "Held-out loss",
                                     "train_vs_held_out": "Training (solid) and held-out (dotted) loss"})
    samples = []
    for model, model_runs in runs.items():
        for run in model_runs:
            if run.sample:
                s = run.sample
                samples.append(f"**{label(model)}**, seed {run.seed} (prime {s['prime']!r}, temperature "
                               f"{s['temperature']}, sampling seed {s['seed']}):\n\n```\n{s['text']}\n```")
    rules = "\n".join(f"- {claim}: {rule}" for claim, rule in claims.RULES.items())
    seeds = seeds_of(runs)
    parts = [
        "# Cerebral LSTM reproduction: report",
        generated(runs_dir),
        "## Our runs",
        (f"Seeds: {', '.join(map(str, seeds))}. With several seeds, the claims use each model's mean curve, "
         "and the last column counts the seeds whose own curves bear the claim out.\n\n"
         + runs_section(runs, counts)) if runs else "None yet: the claims below use the published curves alone.",
        *(["Training loss at the last epoch all of a model's seeds have (epochs count from 0), over its seeds, "
           "beside the published curve of that model at that epoch:\n\n" + last_epoch_section(numbers["last_epoch"])]
          if runs else []),
        "## The paper's claims",
        claims.claims_table(verdicts["published"], verdicts.get("ours"), per_seed),
        *([single_seed_note()] if runs and len(seeds) == 1 else []),
        f"A verdict needs {claims.PAPER_EPOCHS} epochs of the models it names (C5: the two-stacked curve "
        f"up to {claims.STACKED_EPOCHS}); shorter curves say \"not judgeable yet\". What \"about\" means here:\n\n{rules}",
    ]
    if runs:
        parts += ["## Seed by seed",
                  "Each claim's number on each seed's own curves (its verdict's value; - : not judgeable yet on "
                  "that seed; fails: the claim fails there without a number), with the mean and the sample SD "
                  "over the seeds that have one:\n\n"
                  + claim_values_section(numbers["claim_values"], seeds),
                  "Margins, paired by seed (seed k of every model draws the same batches): each seed's difference "
                  "at the epoch, positive where the claim holds, over the seeds whose two curves reach it. Interval: "
                  f"{claims.INTERVAL}.\n\n" + margins_section(numbers["margins"], seeds)]
    parts += ["## Distance to the published curves",
              distance,
              "Epochs each curve needs to reach a loss (first epoch at or below it; - : not reached):\n\n" + reach]
    if numbers["distance_per_seed"]:
        parts += ["Each seed's distance to the published curve, over the epochs both have:\n\n"
                  + seed_distance_section(numbers["distance_per_seed"]),
                  "The largest gap between two seeds' curves of a model, |seed a - seed b| at any epoch all its "
                  "seeds have:\n\n" + spread_section(numbers["seed_spread"])]
    rows = held_out(runs)
    if rows:
        comparison = held_out_comparison(rows)
        parts += ["## Held-out loss", "Loss on the held-out block of sequences (`data.val_fraction`), "
                  "mean over seeds; bits per character = nats / ln 2.\n\n" + held_out_section(rows),
                  *([comparison] if comparison else [])]
    if figures:
        parts += ["## Figures", "\n".join(figures)]
    if samples:
        parts += ["## Generated text (Table 3 of the paper)", "\n\n".join(samples)]
    return "\n\n".join(parts) + "\n"


def accuracy(run):
    """Last-epoch and best test accuracy of a classification run, with the best epoch."""
    curve = run.metric("test_accuracy")
    best = max(range(len(curve)), key=curve.__getitem__)
    return {"seed": run.seed, "epochs": len(curve), "final": curve[-1], "best": curve[best], "best_epoch": best,
            "test_loss": run.metric("test_loss")[-1], "seconds": run.seconds, "precision": run.precision}


def published_percent(value):
    """A published accuracy with the digits it was given to: 0.91 -> 91%, 0.985 -> 98.5%."""
    return f"{value * 100:.2f}".rstrip("0").rstrip(".") + "%"


def reference(runs):
    """The published test accuracies of the runs' task, {"source", "test_accuracy": {method: accuracy}},
    from the `task.reference` block of the first run's config.yaml; None where it names none."""
    for model_runs in runs.values():
        for run in model_runs:
            block = run.config.get("task", {}).get("reference") or {}
            if block.get("test_accuracy"):
                return {"source": block["source"], "test_accuracy": dict(block["test_accuracy"])}
    return None


MATCHED = "single_lstm_matched"  # the single LSTM whose whole model has the Cerebral model's parameter count


def matched_verdict(results, counts):
    """Whether the Cerebral LSTM beats the single LSTM of equal parameters on the mean over seeds of the
    last epoch's test accuracy: the numbers and a sentence, "within the spread" where the two cores'
    ranges over their seeds overlap. None unless both cores have runs."""
    if "cerebral_lstm" not in results or MATCHED not in results:
        return None
    ours, theirs = ([r["final"] for r in results[m]] for m in ("cerebral_lstm", MATCHED))
    # rounded, so that equal sums of accuracies (counts of test sequences) give equal means whatever
    # the order of the additions
    mean_ours, mean_theirs = round(sum(ours) / len(ours), 12), round(sum(theirs) / len(theirs), 12)
    overlap = max(min(ours), min(theirs)) <= min(max(ours), max(theirs))
    seeds = f"{len(ours)} seeds each" if len(ours) == len(theirs) else f"{len(ours)} and {len(theirs)} seeds"
    verb = "beats" if mean_ours > mean_theirs else "does not beat"
    side = "higher" if mean_ours > mean_theirs else "lower"
    difference = ("the same mean" if mean_ours == mean_theirs
                  else f"Cerebral's {abs(mean_ours - mean_theirs) * 100:.2f} points {side}")
    ranges = f"{min(ours):.2%}-{max(ours):.2%} against {min(theirs):.2%}-{max(theirs):.2%}"
    spread = (f"within the spread: the seeds' ranges overlap ({ranges})" if overlap
              else f"outside the spread: the seeds' ranges do not overlap ({ranges})")
    sentence = (f"The Cerebral LSTM {verb} the single LSTM of equal parameters ({MATCHED}, "
                f"{count(counts.get(MATCHED))} parameters against the Cerebral model's {count(counts.get('cerebral_lstm'))}) "
                f"on mean last-epoch test accuracy over {seeds}: {mean_ours:.2%} against {mean_theirs:.2%}, "
                f"{difference}, {spread}.")
    return {"cerebral_lstm": mean_ours, MATCHED: mean_theirs, "seeds": [len(ours), len(theirs)],
            "beats": mean_ours > mean_theirs, "within_spread": overlap, "sentence": sentence}


def classification_report(runs_dir, out_dir, runs, task, counts):
    """REPORT.md text and report.json data for classification runs: test accuracy per core and seed,
    the task's published reference numbers in rows of their own, and whether the Cerebral LSTM beats
    the single LSTM of equal parameters."""
    results = {model: [accuracy(r) for r in model_runs] for model, model_runs in runs.items()}
    summary = ["| model | parameters | seeds | test accuracy, last epoch: mean (min-max) | best test accuracy: mean |",
               "|---|---|---|---|---|"]
    per_seed = ["| model | seed | epochs | test accuracy, last epoch | best (epoch) | test loss | device | precision | commit "
                "| wall time |", "|---|---|---|---|---|---|---|---|---|---|"]
    for model, rows in results.items():
        finals = [r["final"] for r in rows]
        summary.append(f"| {model} | {count(counts[model])} | {len(rows)} | {sum(finals) / len(finals):.2%} "
                       f"({min(finals):.2%}-{max(finals):.2%}) | {sum(r['best'] for r in rows) / len(rows):.2%} |")
        for run, r in zip(runs[model], rows, strict=True):
            session = run.session
            per_seed.append(f"| {model} | {r['seed']} | {r['epochs']} | {r['final']:.2%} | {r['best']:.2%} ({r['best_epoch']}) "
                            f"| {r['test_loss']:.4f} | {device(session)} | {run.precision} "
                            f"| {(session.get('git_commit') or '-')[:12]} "
                            f"| {fmt(r['seconds'], 0)} s |")
    published = reference(runs)
    notes = []
    if published:
        summary += [f"| *published, not ours:* {method} | - | - | {published_percent(value)} | - |"
                    for method, value in published["test_accuracy"].items()]
        notes.append("Rows marked *published, not ours* are no runs of ours: the test accuracies published in "
                     f"{published['source']}, as the task config's `task.reference` lists them (one number each, "
                     "without seeds, spread or our parameter counts).")
    verdict = matched_verdict(results, counts)
    if verdict:
        notes.append(verdict["sentence"])
    figures = figure_links(out_dir, {"test_accuracy": "Test accuracy per epoch", "train_loss": "Training loss per epoch"})
    parts = [f"# Sequence classification, task={task}: report", generated(runs_dir),
             "## Test accuracy per core", "\n".join(summary), *notes, "## Every run", "\n".join(per_seed)]
    if figures:
        parts += ["## Figures", "\n".join(figures)]
    data = {"task": task, "parameters": counts, "accuracy": results, "reference": published,
            "cerebral_vs_matched": verdict}
    return "\n\n".join(parts) + "\n", data, "\n".join([*summary, *notes])


VALIDATION = "VALIDATION.md"


def validation_sweep(root):
    """{learning rate: {model: [Run]}} of a validation sweep: one runs folder per learning rate,
    <root>/lr<lr>/<model>/seed<k>/, every run trained with data.validation=true. ConfigError for a run
    that held out no validation split, or a folder whose runs do not share one learning rate."""
    sweep = {}
    for folder in sweep_folders(root):
        runs = find_runs(folder)
        rates = {run.config.get("optim", {}).get("lr") for model_runs in runs.values() for run in model_runs}
        if len(rates) > 1:
            raise ConfigError(f"{folder} holds runs of several learning rates ({', '.join(map(str, sorted(rates)))})")
        for run in (r for model_runs in runs.values() for r in model_runs):
            if not run.validation:
                raise ConfigError(f"{run.path} did not train with data.validation=true: it has no validation accuracy")
        if runs:
            sweep[rates.pop()] = runs
    return dict(sorted(sweep.items()))


def validation_choice(sweep, grid):
    """Mean over seeds of the validation accuracy after each number of epochs in `grid`, per learning
    rate and core, and the choice: the (epochs, learning rate) whose mean over the cores (those run at
    every rate) is highest; ties go to fewer epochs, then the lower rate. A run of E epochs is the
    first E epochs of a longer one (constant rate, batches drawn epoch by epoch), so the accuracy
    after E epochs is the last epoch's of a run of E epochs."""
    cores = [m for m in next(iter(sweep.values())) if all(m in runs for runs in sweep.values())]
    table, means = {}, {}
    for lr, runs in sweep.items():
        table[lr] = {}
        for model in cores:
            curves = [run.metric("val_accuracy") or [] for run in runs[model]]
            table[lr][model] = {e: (sum(c[e - 1] for c in curves) / len(curves)
                                    if all(len(c) >= e for c in curves) else None) for e in grid}
        means[lr] = {e: (None if any(table[lr][m][e] is None for m in cores)
                         else sum(table[lr][m][e] for m in cores) / len(cores)) for e in grid}
    scored = [(means[lr][e], -e, -lr) for lr in sweep for e in grid if means[lr][e] is not None]
    if not scored:
        raise ConfigError(f"no learning rate's runs all reach {min(grid)} epochs yet")
    best, epochs, lr = max(scored)
    return {"cores": cores, "table": table, "means": means,
            "chosen": {"epochs": -epochs, "lr": -lr, "mean_val_accuracy": best}}


def validation_report(root, grid, out_dir=None):
    """VALIDATION.md of a validation sweep under `root`, written into `out_dir` (default: `root`)
    (`scripts/compare.py --runs ROOT --validation EPOCHS [--out DIR]`): the table of validation
    accuracies, the rule, the choice and the commands that ran."""
    sweep = validation_sweep(root)
    if not sweep:
        raise ConfigError(f"no validation runs under {root}: it holds lr<lr>/<model>/seed<k>/ runs folders")
    out_dir = make_output_folder(out_dir) if out_dir else None
    result = validation_choice(sweep, grid)
    runs = [run for model_runs in sweep.values() for rs in model_runs.values() for run in rs]
    task, seeds = runs[0].task, sorted({run.seed for run in runs})
    lines = [f"| learning rate | core | {' | '.join(f'after {e} epochs' for e in grid)} |",
             "|---|---|" + "---|" * len(grid)]
    for lr, rows in result["table"].items():
        for model, row in rows.items():
            lines.append(f"| {lr} | {model} | {' | '.join('-' if v is None else f'{v:.2%}' for v in row.values())} |")
        lines.append(f"| **{lr}** | **mean over the cores** | "
                     f"{' | '.join('-' if v is None else f'**{v:.2%}**' for v in result['means'][lr].values())} |")
    chosen = result["chosen"]
    commands = sorted({(run.session.get("command") or "-") for run in runs})
    text = "\n\n".join([
        f"# Validation: task={task}, the number of epochs and the learning rate of every core",
        generated(f"{root} --validation {','.join(map(str, grid))}" + (f" --out {out_dir}" if out_dir else "")),
        f"Each run trains on 90% of the training set and scores the other 10% (`data.validation=true`: a "
        f"stratified split drawn with seed 0); the test set is not read. Seeds: {', '.join(map(str, seeds))}; "
        f"cores: {', '.join(result['cores'])}. Cell: the validation accuracy after that many epochs (mean over "
        "the seeds), read from each run's metrics.csv.",
        "Rule: the number of epochs in the grid and the learning rate whose mean validation accuracy over the "
        "cores is highest; ties go to fewer epochs, then the lower rate. With a constant learning rate and "
        "batches drawn epoch by epoch, a run of E epochs is the first E epochs of a longer run, so the accuracy "
        "after E epochs is the last epoch's accuracy of a run of E epochs: the number the report gives.",
        "\n".join(lines),
        f"Chosen: `train.epochs={chosen['epochs']}`, `optim.lr={chosen['lr']}` (mean validation accuracy over the "
        f"cores {chosen['mean_val_accuracy']:.2%}), for every core in `conf/task/{task}.yaml`.",
        "The runs (each run.json's command):\n\n```\n" + "\n".join(commands) + "\n```"]) + "\n"
    write_text_atomic(Path(out_dir or root) / VALIDATION, text)
    return result


def claims_report(runs_dir, data_dir, out_dir, published, runs, ours):
    """REPORT.md text, report.json data and the claims table for character-model runs."""
    verdicts = {"published": claims.judge_all(published)}
    if ours:
        verdicts["ours"] = claims.judge_all(ours)
    stats = claims.curve_stats(ours, published)
    per_seed = claims.judge_per_seed(runs) if len(seeds_of(runs)) > 1 else None
    counts = parameter_counts(runs, data_dir)
    numbers = seed_numbers(runs, published)
    text = report(runs_dir, out_dir, runs, verdicts, stats, counts, per_seed, numbers)
    data = {"claims": {k: claims.as_json(v) for k, v in verdicts.items()}, "stats": stats,
            "claims_per_seed": {seed: claims.as_json(v) for seed, v in (per_seed or {}).items()},
            **numbers, "parameters": counts, "held_out": held_out(runs),
            "runs": {m: [{"seed": r.seed, "epochs": len(r.losses), "precision": r.precision,
                          "path": str(r.path.relative_to(runs_dir))}
                         for r in rs] for m, rs in runs.items()}}
    return text, data, claims.claims_table(verdicts["published"], verdicts.get("ours"), per_seed)



def write_report(runs_dir, out_dir, data_dir):
    """Write REPORT.md and report.json for the runs under `runs_dir` into `out_dir`; return the
    table to print (the claims, or the accuracy per core). Exits with one line for bad input."""
    published, runs, ours = load_comparison(runs_dir, data_dir)
    make_output_folder(out_dir)
    task = run_task(runs)
    if task == "charlm":
        text, data, table = claims_report(runs_dir, data_dir, out_dir, published, runs, ours)
    else:
        counts = {model: model_runs[0].parameters for model, model_runs in runs.items()}
        text, data, table = classification_report(runs_dir, out_dir, runs, task, counts)
    write_text_atomic(out_dir / "REPORT.md", text)
    write_text_atomic(out_dir / "report.json", json.dumps(data, indent=2) + "\n")
    return table


# How close a run in another precision must stay to its fp32 twin (the verdict issue's bounds):
# mean |difference| over the common epochs, and for the two-stacked model, whose exit from the
# plateau near 3.5 moves with any perturbation, the epoch it first reaches a loss of 3.0.
FIDELITY_MEAN = {"single_lstm": 0.01, "cerebral_lstm": 0.01, "stacked_lstm": 0.03}
FIDELITY_LEVEL, FIDELITY_PLATEAU_EXIT_SHIFT, FIDELITY_PUBLISHED = 3.0, 3, 0.01  # loss, epochs, loss
FIDELITY_LENGTH = 50  # epochs the bounds are judged over; shorter curves get no verdict yet


def fidelity(ours, reference, published, bound=None):
    """Per model in both {model: losses}: how far `ours` (e.g. bf16) lies from `reference`
    (fp32) over their common epochs, and whether each distance to the published curve moved.
    `bound`: the mean distance allowed every model (default FIDELITY_MEAN's, per model)."""
    rows = {}
    for model in [m for m in ours if m in reference]:
        n = min(len(ours[model]), len(reference[model]))
        if n == 0:
            continue
        a, b = ours[model][:n], reference[model][:n]
        apart = claims.distance(a, b)
        p = published.get(model, [])[:n]

        def distance(curve, p=p):
            return claims.distance(curve, p)["mean_abs_diff"] if p else None

        first_a, first_b = claims.first_at_or_below(a, FIDELITY_LEVEL), claims.first_at_or_below(b, FIDELITY_LEVEL)
        row = {"epochs": n, "mean_abs_diff": apart["mean_abs_diff"], "max_abs_diff": apart["max_abs_diff"],
               "max_abs_diff_epoch": apart["max_abs_diff_epoch"], "first_at_3": first_a, "reference_first_at_3": first_b,
               "distance_to_published": distance(a), "reference_distance_to_published": distance(b)}
        row["bound"] = bound if bound is not None else FIDELITY_MEAN.get(model, 0.01)
        checks = [row["mean_abs_diff"] <= row["bound"]]
        if model == "stacked_lstm":
            checks.append(first_a is not None and first_b is not None and abs(first_a - first_b) <= FIDELITY_PLATEAU_EXIT_SHIFT)
        if p:
            checks.append(abs(row["distance_to_published"] - row["reference_distance_to_published"]) <= FIDELITY_PUBLISHED)
        row["passes"] = all(checks) if n >= FIDELITY_LENGTH else None
        rows[model] = row
    return rows


def fidelity_table(rows, name, reference_name):
    lines = [f"| model | epochs | mean abs diff {name} - {reference_name} (bound) | max (epoch) | first epoch <= 3.0: "
             f"{name} / {reference_name} | mean distance to published: {name} / {reference_name} | passes |",
             "|---|---|---|---|---|---|---|"]
    for model, r in rows.items():
        lines.append(f"| {model} | {r['epochs']} | {fmt_difference(r['mean_abs_diff'])} ({r['bound']}) | "
                     f"{fmt_difference(r['max_abs_diff'])} ({r['max_abs_diff_epoch']}) | {fmt(r['first_at_3'])} / "
                     f"{fmt(r['reference_first_at_3'])} | {fmt(r['distance_to_published'])} / "
                     f"{fmt(r['reference_distance_to_published'])} | "
                     f"{ {True: 'yes', False: 'no', None: f'not yet ({FIDELITY_LENGTH} epochs needed)'}[r['passes']]} |")
    return "\n".join(lines)
