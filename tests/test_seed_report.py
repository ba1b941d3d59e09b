"""The report and figures for several seeds at full length: each claim's number per seed with mean
and SD, the margins paired by seed with their t-intervals, the distance and spread per seed, the
C5 marks of Fig. 14, the difference figure, and the held-out gap, figure and comparison. Three
synthetic seeds with known curves, so every number is checked against a hand computation."""

import json
import math

import pytest
from conftest import runs_of

from cerebral import claims, plots, report
from cerebral.curves import find_runs
from cerebral.report import write_report

T_2 = 4.302653  # t(0.975) with 2 degrees of freedom
# per seed 0, 1, 2: Cerebral's early epochs above both (J) and then above single only (V); the last
# epoch two-stacked is above single (K); two-stacked's drop to 0.1 (M), below Cerebral's 0.5 - 0.01 s
J, V, K, M = (3, 5, 10), (2, 4, 6), (250, 260, 290), (650, 676, 700)


def single(s):
    return [2.0 + 0.1 * s] * 500


def stacked(s):
    return [3.0 if e <= K[s] else 1.0 if e < M[s] else 0.1 for e in range(791)]


def cerebral(s):
    curve = [5.0 if e < J[s] else 2.5 if e < J[s] + V[s] else 0.5 for e in range(500)]
    curve[499] = 0.5 - 0.01 * s
    return curve


CURVES = {"single_lstm": single, "stacked_lstm": stacked, "cerebral_lstm": cerebral}


def write_run(root, model, seed, losses, val=None):
    """<root>/<model>/seed<seed>/ with loss.txt, and metrics.csv with held-out loss when `val` is given."""
    path = root / model / f"seed{seed}"
    path.mkdir(parents=True)
    (path / "loss.txt").write_text("".join(f"[{i}] loss : {v}\n" for i, v in enumerate(losses)))
    if val is not None:
        rows = [f"{i},{v},1.0,{w}" for i, (v, w) in enumerate(zip(losses, val, strict=True))]
        (path / "metrics.csv").write_text("\n".join(["epoch,train_loss,seconds,val_loss", *rows]) + "\n")
    return path


@pytest.fixture
def three_seeds(tmp_path):
    for model, curve in CURVES.items():
        for s in range(3):
            write_run(tmp_path / "runs", model, s, curve(s))
    return tmp_path / "runs"


def test_each_claims_number_per_seed_with_mean_and_sample_sd(three_seeds):
    values = claims.claim_values(claims.judge_per_seed(find_runs(three_seeds)))
    expected = {"C1": [5, 9, 16], "C2": list(K), "C3": list(J), "C5": list(M)}
    assert {c: list(row["per_seed"].values()) for c, row in values.items() if c != "C4"} == expected
    assert list(values["C4"]["per_seed"].values()) == pytest.approx([0.5, 0.49, 0.48])
    assert values["C1"]["mean"] == 10 and values["C1"]["sd"] == pytest.approx(math.sqrt(31))  # (25 + 1 + 36) / 2
    assert values["C2"]["mean"] == pytest.approx(800 / 3) and values["C2"]["sd"] == pytest.approx(math.sqrt(3900 / 9))
    assert values["C4"]["mean"] == pytest.approx(0.49) and values["C4"]["sd"] == pytest.approx(0.01)
    table = report.claim_values_section(values, [0, 1, 2])
    assert "| C1 | epochs of 0-499 with Cerebral >= single | 5 | 9 | 16 | 3 | 10.0 | 5.6 |" in table
    assert "| C2 | last epoch of 0-499 with two-stacked >= single | 250 | 260 | 290 | 3 | 266.7 | 20.8 |" in table
    assert "| C4 | Cerebral's loss at index 499 | 0.50000 | 0.49000 | 0.48000 | 3 | 0.49000 | 0.01000 |" in table


def test_one_seed_or_an_unjudgeable_seed_has_no_sd():
    one = claims.claim_values(claims.judge_per_seed(runs_of({m: [c(0)] for m, c in CURVES.items()})))
    assert one["C2"] == {"per_seed": {0: 250}, "seeds": 1, "mean": 250, "sd": None}
    table = report.claim_values_section(one, [0])
    assert "| C2 | last epoch of 0-499 with two-stacked >= single | 250 | 1 | 250.0 | - |" in table
    short = runs_of({m: [c(0), c(1)[:400]] for m, c in CURVES.items()})  # seed 1 not judgeable yet
    values = claims.claim_values(claims.judge_per_seed(short))
    assert values["C2"] == {"per_seed": {0: 250, 1: None}, "seeds": 1, "mean": 250, "sd": None}
    assert values["C1"]["per_seed"] == {0: 5, 1: 9}  # failing already at 400 epochs: judged
    short = runs_of({m: [c(0)[20:25]] for m, c in CURVES.items()})  # Cerebral below so far: C1 not judgeable yet
    assert report.claim_values_section(claims.claim_values(claims.judge_per_seed(short)), [0]).startswith("No claim")


def test_a_seed_where_a_claim_fails_without_a_number_says_so_and_is_not_averaged_away():
    """C5 on a seed whose two-stacked curve never reaches its Cerebral level: "fails", counted apart."""
    verdicts = {0: {"C5": claims.Verdict(True, 650, "")}, 1: {"C5": claims.Verdict(False, None, "never reaches it")}}
    row = claims.claim_values({seed: {**{c: claims.Verdict(None, None, "") for c in claims.CLAIMS}, **v}
                               for seed, v in verdicts.items()})["C5"]
    assert row == {"per_seed": {0: 650, 1: "fails"}, "seeds": 1, "mean": 650, "sd": None}
    assert f"| C5 | {claims.NUMBERS['C5']} | 650 | fails | 1 | 650.0 | - |" in \
        report.claim_values_section({"C5": row}, [0, 1])


def test_margins_are_paired_by_seed_with_a_t_interval(three_seeds):
    margins = claims.margins(find_runs(three_seeds))
    assert {c: list(by_epoch) for c, by_epoch in margins.items()} == {c: list(e) for c, (_, _, e) in claims.MARGINS.items()}
    c1 = margins["C1"][499]  # single - Cerebral: 2 + 0.1 s - (0.5 - 0.01 s)
    assert list(c1["per_seed"].values()) == pytest.approx([1.5, 1.61, 1.72])
    assert c1["mean"] == pytest.approx(1.61) and c1["half_width"] == pytest.approx(T_2 * 0.11 / math.sqrt(3), rel=1e-6)
    assert margins["C2"][300]["mean"] == pytest.approx(1.1)  # single - two-stacked: 2 + 0.1 s - 1
    assert margins["C2"][300]["half_width"] == pytest.approx(T_2 * 0.1 / math.sqrt(3), rel=1e-6)
    assert margins["C3"][250] == {"per_seed": {0: 2.5, 1: 2.5, 2: 2.5}, "mean": 2.5, "half_width": 0.0}
    table = report.margins_section(margins, [0, 1, 2])
    assert "| C1 | single LSTM - Cerebral LSTM | 499 | 1.5000 | 1.6100 | 1.7200 | 3 | 1.6100 | 0.2733 |" in table


def test_margins_use_only_the_seeds_that_reach_the_epoch():
    curves = {m: [c(0), c(1), c(2)] for m, c in CURVES.items()}
    curves["cerebral_lstm"][2] = curves["cerebral_lstm"][2][:200]  # the second of C1's pair
    curves["single_lstm"][1] = curves["single_lstm"][1][:350]  # the first of C2's pair
    margins = claims.margins(runs_of(curves))
    assert list(margins["C1"][100]["per_seed"]) == [0, 1, 2] and list(margins["C1"][250]["per_seed"]) == [0, 1]
    assert list(margins["C2"][300]["per_seed"]) == [0, 1, 2] and list(margins["C2"][400]["per_seed"]) == [0, 2]
    assert list(margins["C1"][499]["per_seed"]) == [0]
    one = claims.margins(runs_of({m: [c(0)] for m, c in CURVES.items()}))
    assert one["C3"][499] == {"per_seed": {0: pytest.approx(0.5)}, "mean": pytest.approx(0.5), "half_width": None}
    assert "| 1 | 0.5000 | - |" in report.margins_section(one, [0])
    assert claims.margins(runs_of({m: [c(0)[:50]] for m, c in CURVES.items()})) == {}


def test_distance_and_spread_per_seed():
    runs = runs_of({"single_lstm": [[1.0, 2.0, 3.0], [1.0, 2.0, 3.3, 4.0]], "novo_lstm": [[1.0]]})
    distances = report.seed_distances(runs, {"single_lstm": [1.0, 2.5, 3.0, 9.0]})
    assert list(distances) == ["single_lstm"]  # no published curve, no distance
    assert distances["single_lstm"][0] == {"common_epochs": 3, "mean_abs_diff": pytest.approx(0.5 / 3),
                                           "max_abs_diff": 0.5, "max_abs_diff_epoch": 1}
    assert distances["single_lstm"][1]["max_abs_diff_epoch"] == 3 and distances["single_lstm"][1]["common_epochs"] == 4
    assert "| single_lstm | 1 | 4 | 1.4500 | 5.0000 (3) |" in report.seed_distance_section(distances)


def test_the_last_epoch_all_seeds_have_with_mean_sd_range_and_published():
    runs = runs_of({"single_lstm": [[3.0, 2.0, 1.0], [3.0, 2.5, 1.5, 0.5]], "novo_lstm": [[4.0, 3.0]]})
    rows = report.last_epoch(runs, {"single_lstm": [3.0, 2.0, 1.2], "novo_lstm": [9.0]})
    assert rows["single_lstm"] == {"seeds": 2, "epoch": 2, "mean": 1.25, "sd": pytest.approx(math.sqrt(0.125)),
                                   "min": 1.0, "max": 1.5, "published": 1.2, "difference": pytest.approx(0.05)}
    assert rows["novo_lstm"]["published"] is None and rows["novo_lstm"]["sd"] is None  # too short, one seed
    text = report.last_epoch_section(rows)
    assert "| single_lstm | 2 | 2 | 1.25000 | 0.35355 | 1.00000-1.50000 | 1.20000 | +0.05000 |" in text
    assert "| novo_lstm | 1 | 1 | 3.00000 | - | 3.00000-3.00000 | - | - |" in text


def test_the_report_of_three_seeds(three_seeds, data_dir):
    write_report(three_seeds, three_seeds, data_dir)
    text = (three_seeds / "REPORT.md").read_text()
    assert f"| C5 | {claims.NUMBERS['C5']} | 650 | 676 | 700 | 3 | 675.3 | 25.0 |" in text
    assert claims.INTERVAL in text and "## Seed by seed" in text
    assert "| cerebral_lstm | 3 | 500 | 4.5000 (5) |" in text  # seed 0 at 0.5, seed 1 at 2.5, seed 2 at 5.0
    assert "| stacked_lstm | 3 | 791 | 2.0000 (251) |" in text
    assert "| cerebral_lstm | 3 | 499 | 0.49000 | 0.01000 | 0.48000-0.50000 |" in text  # 0.5 - 0.01 s
    data = json.loads((three_seeds / "report.json").read_text())
    assert data["claim_values"]["C3"] == {"per_seed": {"0": 3, "1": 5, "2": 10}, "seeds": 3, "mean": 6,
                                          "sd": pytest.approx(math.sqrt(13))}
    assert data["margins"]["C2"]["499"]["mean"] == pytest.approx(1.1)
    assert data["seed_spread"]["cerebral_lstm"] == {"largest": 4.5, "epoch": 5, "seeds": 3, "epochs": 500}
    assert set(data["distance_per_seed"]) == set(CURVES) and set(data["distance_per_seed"]["stacked_lstm"]) == {"0", "1", "2"}


def marks(fig):
    """{legend label: (x data, y data)} of the lines that span the axes (axhline, axvline)."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in fig.axes[0].lines
            if line.get_label().startswith(("Cerebral at", "two-stacked first"))}


def test_fig14_marks_c5_on_ours_and_on_the_published_curves(three_seeds, captured, tmp_path):
    published = {"cerebral_lstm": [0.45] * 500 + [0.2] * 10, "stacked_lstm": [1.0] * 600 + [0.46] * 10 + [0.3] * 181}
    plots.write_figures(tmp_path, find_runs(three_seeds), published)
    found = marks(captured["fig14_stacked_vs_cerebral"])
    # our mean two-stacked: (0.1 + 0.1 + 1) / 3 = 0.4 from epoch 676, the first at or below the mean 0.49
    assert found == {"Cerebral at index 499: 0.4900 (ours)": ([0, 1], [pytest.approx(0.49)] * 2),
                     "two-stacked first <= it: epoch 676 (ours)": ([676, 676], [0, 1]),
                     "Cerebral at index 499: 0.4500 (published)": ([0, 1], [0.45, 0.45]),
                     "two-stacked first <= it: epoch 610 (published)": ([610, 610], [0, 1])}
    legend = [t.get_text() for t in captured["fig14_stacked_vs_cerebral"].axes[0].get_legend().get_texts()]
    assert set(found) <= set(legend)
    assert not marks(captured["fig13_single_vs_cerebral"])


def test_c5_marks_only_where_the_curves_are_long_enough(captured, tmp_path):
    published = {"cerebral_lstm": [0.45] * 499, "stacked_lstm": [1.0] * 791}  # too short for a level
    ours = {"cerebral_lstm": [[0.5] * 500 + [0.1] * 5], "stacked_lstm": [[0.6] * 791]}
    plots.write_figures(tmp_path, runs_of(ours), published)
    assert list(marks(captured["fig14_stacked_vs_cerebral"])) == ["Cerebral at index 499: 0.5000 (ours)"]  # never reached


def test_the_difference_figure_draws_mean_and_band_of_ours_minus_published(captured, tmp_path):
    runs = runs_of({"single_lstm": [[2.0, 1.0, 0.5], [3.0, 2.0, 1.0, 0.1]], "novo_lstm": [[1.0, 0.5]]})
    paths = plots.write_figures(tmp_path, runs, {"single_lstm": [1.0, 1.0, 1.0, 1.0]})
    assert "difference.png" in [p.name for p in paths]
    ax = captured["difference"].axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    assert list(lines["single LSTM (ours)"].get_ydata()) == [1.5, 0.5, -0.25]  # mean over the 3 common epochs, minus 1
    assert "NovoLSTM (ours)" not in lines  # no published curve to subtract
    assert any(list(line.get_ydata()) == [0, 0] for line in ax.lines)  # the zero line
    (band,) = ax.collections
    low_high = band.get_paths()[0].vertices[:, 1]
    assert {1.0, 0.0, -0.5} <= set(low_high) and {2.0, 1.0, 0.0} <= set(low_high)  # the seeds' min and max, minus 1
    logy = plots.write_figures(tmp_path, runs, {"single_lstm": [1.0] * 4}, logy=True)
    assert not [p for p in logy if p.stem.startswith("difference")]


@pytest.mark.parametrize("lengths,published_models,study", [
    ({"single_lstm": 500, "stacked_lstm": 791}, ("single_lstm", "stacked_lstm"), False),  # repeats the overview
    ({"single_lstm": 500, "stacked_lstm": 790}, ("single_lstm", "stacked_lstm"), True),
    ({"single_lstm": 500, "single_lstm_matched": 500}, ("single_lstm",), True),  # the one figure of the variant
])
def test_the_study_figure_only_where_it_adds_to_the_overview(captured, tmp_path, lengths, published_models, study):
    published = {"single_lstm": [1.0] * 500, "stacked_lstm": [1.0] * 791}
    runs = runs_of({m: [[2.0] * n] for m, n in lengths.items()})
    plots.write_figures(tmp_path, runs, {m: published[m] for m in published_models})
    assert ("study" in captured) is study


@pytest.fixture
def held_out_runs(tmp_path):
    """Training and held-out loss per model and seed (two seeds, three epochs)."""
    val = {"single_lstm": [[3.0, 2.0, 1.6], [3.0, 2.2, 1.8]], "cerebral_lstm": [[3.0, 1.5, 1.7], [3.0, 1.7, 1.9]],
           "single_lstm_matched": [[3.0, 1.0, 1.2], [3.0, 1.2, 1.4]]}
    for model, seeds in val.items():
        for s, v in enumerate(seeds):
            write_run(tmp_path / "runs", model, s, [x - 0.5 for x in v], v)
    return find_runs(tmp_path / "runs")


def test_held_out_gap_and_comparison_follow_the_numbers(held_out_runs):
    rows = report.held_out(held_out_runs)
    assert rows["cerebral_lstm"]["gap"] == pytest.approx(0.5) and rows["cerebral_lstm"]["best_epoch"] == 1
    assert "| +0.5000 | 1.6000 (1) |" in report.held_out_section(rows)
    sentence = report.held_out_comparison(rows)
    assert ("Cerebral LSTM against single LSTM, held-out loss (mean over seeds): at the last epoch 1.8000 (epoch 2) "
            "against 1.7000 (epoch 2), Cerebral's 0.1000 higher; at each model's best epoch 1.6000 (epoch 1) against "
            "1.7000 (epoch 2), Cerebral's 0.1000 lower.") in sentence
    assert ("against single LSTM, Cerebral's size, held-out loss (mean over seeds): at the last epoch 1.8000 (epoch 2) "
            "against 1.3000 (epoch 2), Cerebral's 0.5000 higher; at each model's best epoch 1.6000 (epoch 1) against "
            "1.1000 (epoch 1), Cerebral's 0.5000 higher.") in sentence
    assert report.held_out_comparison({m: r for m, r in rows.items() if m != "cerebral_lstm"}) == ""


def test_training_and_held_out_loss_in_one_figure(held_out_runs, captured, tmp_path):
    plots.write_figures(tmp_path, held_out_runs, {})
    lines = {line.get_label(): line for line in captured["train_vs_held_out"].axes[0].lines}
    assert list(lines["Cerebral LSTM (held-out)"].get_ydata()) == pytest.approx([3.0, 1.6, 1.8])
    assert lines["Cerebral LSTM (held-out)"].get_linestyle() == ":"
    assert list(lines["Cerebral LSTM (training)"].get_ydata()) == pytest.approx([2.5, 1.1, 1.3])
    assert lines["Cerebral LSTM (training)"].get_linestyle() == "-" and len(lines) == 6
