"""The paper's claims about its curves, judged on any set of curves {model: losses}.

Each judge returns a Verdict: `holds` is True, False, or None when the curves are too short to
tell; `value` is the number the claim is about; `text` says it in words. The rules for "about"
are stated in RULES, so a reader can disagree with them openly.
"""

import math
from dataclasses import asdict, dataclass
from statistics import mean, stdev

from scipy.stats import t

from cerebral.curves import MODELS, seeds_of

PAPER_EPOCHS = 500
STACKED_EPOCHS = 791  # the published two-stacked file runs on to find where it reaches Cerebral
LEVELS = (3.0, 2.0, 1.0, 0.5)
C5_EARLIEST, C5_LATEST = 610, 746  # "about 678 epochs": 678 +- 10%

CLAIMS = {
    "C1": "Cerebral is below single LSTM at every epoch",
    "C2": "two-stacked overtakes single LSTM for good after about epoch 250",
    "C3": "Cerebral is below two-stacked through epoch 500",
    "C4": "Cerebral's loss after 500 epochs is 0.3979",
    "C5": "two-stacked needs about 678 epochs to reach Cerebral's 500-epoch loss",
}
RULES = {
    "C1": "every one of epochs 0-499",
    "C2": "the last epoch (of 0-499) where two-stacked >= single lies in 200-300",
    "C3": "Cerebral is below two-stacked at every epoch from some epoch <= 50 through 499",
    "C4": "the loss at epoch index 499 is within 0.02 of 0.3979",
    "C5": "the first epoch where two-stacked <= Cerebral's loss at index 499 lies in 610-746 (678 +- 10%)",
}

NUMBERS = {  # what each claim's `value` counts, for the table of each seed's numbers
    "C1": "epochs of 0-499 with Cerebral >= single",
    "C2": "last epoch of 0-499 with two-stacked >= single",
    "C3": "first epoch from which Cerebral stays below two-stacked",
    "C4": "Cerebral's loss at index 499",
    "C5": "first epoch with two-stacked <= that seed's Cerebral loss at index 499",
}
# claim -> (model, other model, epochs): the difference model - other, positive where the claim holds
MARGINS = {"C1": ("single_lstm", "cerebral_lstm", (100, 250, 499)),
           "C2": ("single_lstm", "stacked_lstm", (300, 400, 499)),
           "C3": ("stacked_lstm", "cerebral_lstm", (100, 250, 499))}
INTERVAL = ("mean of the per-seed differences ± t(0.975, n−1)·SD/√n; with 3 seeds a bootstrap has only 10 distinct "
            "resamples, so the t-interval is used")


@dataclass
class Verdict:
    holds: bool | None
    value: float | int | None
    text: str

    def cell(self):
        mark = {True: "yes", False: "no", None: "not judgeable yet"}[self.holds]
        return f"{mark}: {self.text}"


def _need(curves, models, epochs):
    """A 'not judgeable yet' Verdict when a curve is missing or shorter than `epochs`, else None."""
    for m in models:
        if m not in curves:
            return Verdict(None, None, f"no {m} curve")
    short = {m: len(curves[m]) for m in models if len(curves[m]) < epochs}
    if short:
        have = ", ".join(f"{m} has {n}" for m, n in short.items())
        return Verdict(None, None, f"needs {epochs} epochs ({have})")
    return None


def first_at_or_below(curve, level):
    """The first epoch whose loss is <= level, or None."""
    return next((i for i, v in enumerate(curve) if v <= level), None)


def judge_c1(curves):
    if (missing := _need(curves, ("single_lstm", "cerebral_lstm"), 0)) is not None:
        return missing
    single, cerebral = curves["single_lstm"], curves["cerebral_lstm"]
    n = min(len(single), len(cerebral), PAPER_EPOCHS)
    above = [i for i in range(n) if cerebral[i] >= single[i]]
    if above:
        return Verdict(False, len(above), f"Cerebral >= single at {len(above)} of epochs 0-{n - 1}, first at {above[0]}")
    if n < PAPER_EPOCHS:
        return Verdict(None, 0, f"below at all {n} epochs so far (needs {PAPER_EPOCHS})")
    return Verdict(True, 0, f"below at all {PAPER_EPOCHS} epochs")


def judge_c2(curves):
    if (short := _need(curves, ("single_lstm", "stacked_lstm"), PAPER_EPOCHS)) is not None:
        return short
    single, stacked = curves["single_lstm"], curves["stacked_lstm"]
    last = max((i for i in range(PAPER_EPOCHS) if stacked[i] >= single[i]), default=None)
    if last is None:
        return Verdict(False, None, "two-stacked is below single from epoch 0")
    return Verdict(200 <= last <= 300, last, f"last epoch with two-stacked >= single: {last}")


def judge_c3(curves):
    if (short := _need(curves, ("stacked_lstm", "cerebral_lstm"), PAPER_EPOCHS)) is not None:
        return short
    stacked, cerebral = curves["stacked_lstm"], curves["cerebral_lstm"]
    not_below = [i for i in range(PAPER_EPOCHS) if cerebral[i] >= stacked[i]]
    start = not_below[-1] + 1 if not_below else 0
    if start >= PAPER_EPOCHS:
        return Verdict(False, None, "Cerebral is not below two-stacked at epoch 499")
    return Verdict(start <= 50, start, f"below from epoch {start} on")


def judge_c4(curves):
    if (short := _need(curves, ("cerebral_lstm",), PAPER_EPOCHS)) is not None:
        return short
    final = curves["cerebral_lstm"][PAPER_EPOCHS - 1]
    return Verdict(abs(final - 0.3979) <= 0.02, final, f"{final:.5f} at index {PAPER_EPOCHS - 1}")


def judge_c5(curves):
    if (short := _need(curves, ("cerebral_lstm",), PAPER_EPOCHS)) is not None:
        return short
    if "stacked_lstm" not in curves:
        return Verdict(None, None, "no stacked_lstm curve")
    target = curves["cerebral_lstm"][PAPER_EPOCHS - 1]
    stacked = curves["stacked_lstm"]
    reached = first_at_or_below(stacked, target)
    if reached is None:
        text = f"two-stacked does not reach {target:.4f} in its {len(stacked)} epochs"
        return Verdict(None if len(stacked) <= C5_LATEST else False, None, text)
    return Verdict(C5_EARLIEST <= reached <= C5_LATEST, reached, f"first <= {target:.4f} at index {reached}")


JUDGES = {"C1": judge_c1, "C2": judge_c2, "C3": judge_c3, "C4": judge_c4, "C5": judge_c5}


def judge_all(curves):
    """claim id -> Verdict."""
    return {claim: judge(curves) for claim, judge in JUDGES.items()}


def seed_curves(runs, seed):
    """{model: losses} of one seed ({model: [Run]} in): seed k of every model draws the same batches."""
    return {m: r.losses for m, rs in runs.items() for r in rs if r.seed == seed}


def judge_per_seed(runs):
    """seed -> the verdicts on that seed's curves ({model: [Run]} in, every seed any model has)."""
    return {seed: judge_all(seed_curves(runs, seed)) for seed in seeds_of(runs)}


def mean_sd(values):
    """(mean, sample SD) of the numbers; the SD is None for fewer than two numbers, both for none."""
    if not values:
        return None, None
    return mean(values), stdev(values) if len(values) > 1 else None


def t_interval(values):
    """(mean, half-width t(0.975, n-1)·SD/√n of its 95% interval); the half-width is None for one number:
    with 3 seeds a bootstrap has only 10 distinct resamples."""
    centre, sd = mean_sd(values)
    return centre, None if sd is None else t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))


def seed_number(verdict):
    """A seed's number for a claim: its verdict's value; "fails" where the claim fails without one
    (e.g. C5: two-stacked never reaches the level); None where not judgeable yet."""
    if verdict.holds is None:
        return None
    return "fails" if verdict.value is None else verdict.value


def claim_values(per_seed):
    """claim -> each seed's number (`seed_number`), with the mean and SD of the numbers and how many
    seeds they are: a seed that fails without a number is not averaged away unseen."""
    rows = {}
    for claim in CLAIMS:
        values = {seed: seed_number(v[claim]) for seed, v in per_seed.items()}
        numbers = [x for x in values.values() if x is not None and x != "fails"]
        centre, sd = mean_sd(numbers)
        rows[claim] = {"per_seed": values, "seeds": len(numbers), "mean": centre, "sd": sd}
    return rows


def margins(runs):
    """claim -> epoch -> the differences of MARGINS paired by seed, over the seeds whose two curves reach
    that epoch, with their mean and t half-width; an epoch no seed reaches is left out."""
    rows, by_seed = {}, {seed: seed_curves(runs, seed) for seed in seeds_of(runs)}
    for claim, (model, other, epochs) in MARGINS.items():
        for epoch in epochs:
            diffs = {seed: c[model][epoch] - c[other][epoch] for seed, c in by_seed.items()
                     if len(c.get(model, ())) > epoch and len(c.get(other, ())) > epoch}
            if diffs:
                centre, half = t_interval(list(diffs.values()))
                rows.setdefault(claim, {})[epoch] = {"per_seed": diffs, "mean": centre, "half_width": half}
    return rows


def seed_counts(per_seed):
    """claim id -> 'k/n seeds' (k: seeds where the claim holds), noting seeds not judgeable yet."""
    counts = {}
    for claim in CLAIMS:
        holds = [verdicts[claim].holds for verdicts in per_seed.values()]
        text = f"{holds.count(True)}/{len(holds)} seeds"
        if None in holds:  # say whether the seeds not judgeable yet contradict the claim so far
            text += f" ({holds.count(False)} fail, {holds.count(None)} not judgeable yet)"
        counts[claim] = text
    return counts


def distance(ours, published):
    """Over the epochs both curves have: the mean and the largest |ours - published|, with its epoch."""
    n = min(len(ours), len(published))
    diffs = [abs(a - b) for a, b in zip(ours[:n], published[:n], strict=True)]
    return {"common_epochs": n, "mean_abs_diff": sum(diffs) / n, "max_abs_diff": max(diffs),
            "max_abs_diff_epoch": diffs.index(max(diffs))}


def curve_stats(ours, published):
    """Per model: distance to the published curve over the common epochs, the final-loss ratio
    (ours / published at the last common epoch) and the epochs needed to reach each of LEVELS."""
    stats = {}
    for model in dict.fromkeys([m for m in MODELS if m in published] + list(ours)):
        o, p = ours.get(model), published.get(model)
        row = {"epochs_ours": len(o) if o else 0, "epochs_published": len(p) if p else 0}
        if o and p:
            row.update(distance(o, p))
            row["final_ratio"] = o[row["common_epochs"] - 1] / p[row["common_epochs"] - 1]
        for name, curve in (("ours", o), ("published", p)):
            if curve:
                row[f"epochs_to_reach_{name}"] = {str(level): first_at_or_below(curve, level) for level in LEVELS}
        stats[model] = row
    return stats


def as_json(verdicts):
    return {claim: asdict(v) for claim, v in verdicts.items()}


def claims_table(published, ours=None, per_seed=None):
    """Markdown: one row per claim, the published curves' verdict and, when given, ours (with
    several seeds: on the mean curves) and the count of seeds where it holds."""
    header = "| claim | statement | published curves |" + (" our runs |" if ours else "") + (" per seed |" if per_seed else "")
    lines = [header, "|---|---|---|" + ("---|" if ours else "") + ("---|" if per_seed else "")]
    counts = seed_counts(per_seed) if per_seed else {}
    for claim, text in CLAIMS.items():
        row = f"| {claim} | {text} | {published[claim].cell()} |"
        row += f" {ours[claim].cell()} |" if ours else ""
        lines.append(row + (f" {counts[claim]} |" if per_seed else ""))
    return "\n".join(lines)
