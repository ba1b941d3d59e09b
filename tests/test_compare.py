import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from cerebral import claims, report
from cerebral.curves import color, find_runs, label, mean_curve, published_curves
from cerebral.losslog import LossFileError
from cerebral.plots import FIGURES, draw, write_figures
from cerebral.report import write_report


@pytest.fixture(scope="module")
def published(data_dir):
    return published_curves(data_dir)


def test_claims_on_the_published_curves_are_the_published_facts(published):
    v = claims.judge_all(published)
    assert v["C1"].holds is True and v["C1"].text == "below at all 500 epochs"
    assert v["C2"].holds is True and v["C2"].value == 266
    assert v["C3"].holds is True and v["C3"].value == 2
    assert v["C4"].holds is True and f"{v['C4'].value:.5f}" == "0.39800"
    assert v["C5"].holds is True and v["C5"].value == 676


def test_short_curves_are_not_judgeable_yet(published):
    short = {model: curve[:3] for model, curve in published.items()}
    v = claims.judge_all(short)
    assert all(verdict.holds is None for verdict in v.values())
    assert v["C1"].text == "below at all 3 epochs so far (needs 500)"
    assert v["C2"].cell().startswith("not judgeable yet: needs 500 epochs")


def test_claims_can_fail():
    flat = [1.0] * 500
    v = claims.judge_all({"single_lstm": flat, "stacked_lstm": [0.5] * 791, "cerebral_lstm": flat[:10] + [2.0] + flat[11:]})
    assert v["C1"].holds is False and v["C1"].text.endswith("first at 0")
    assert v["C2"].holds is False and "from epoch 0" in v["C2"].text
    assert v["C3"].holds is False
    assert v["C4"].holds is False and v["C4"].value == 1.0
    assert v["C5"].holds is False and v["C5"].value == 0


def test_c5_waits_for_the_two_stacked_curve_to_run_long_enough():
    cerebral = [0.4] * 500
    assert claims.judge_c5({"cerebral_lstm": cerebral, "stacked_lstm": [0.5] * 600}).holds is None
    assert claims.judge_c5({"cerebral_lstm": cerebral, "stacked_lstm": [0.5] * 760}).holds is False


def test_curve_stats():
    stats = claims.curve_stats({"single_lstm": [4.0, 2.5, 0.9]}, {"single_lstm": [4.0, 3.0, 1.0, 0.4]})
    row = stats["single_lstm"]
    assert row["common_epochs"] == 3 and row["max_abs_diff"] == 0.5 and row["max_abs_diff_epoch"] == 1
    assert row["mean_abs_diff"] == pytest.approx(0.2) and row["final_ratio"] == pytest.approx(0.9)
    assert row["epochs_to_reach_ours"] == {"3.0": 1, "2.0": 2, "1.0": 2, "0.5": None}
    assert row["epochs_to_reach_published"]["0.5"] == 3


@pytest.mark.parametrize("with_ours,with_published", [(True, True), (True, False), (False, True)])
def test_each_figure_holds_the_expected_curves(tiny_runs, published, with_ours, with_published):
    ours = {m: mean_curve(rs) for m, rs in find_runs(tiny_runs).items()} if with_ours else {}
    assert len({tuple(c) for c in ours.values()}) == len(ours)  # the models' curves differ
    shown = published if with_published else {}
    for title, models in FIGURES.values():
        ax = draw(title, models, ours, shown).axes[0]
        expected = {f"{label(m)} ({source})": (curves[m], style, color(m))
                    for m in models for curves, source, style in ((ours, "ours", "-"), (shown, "published", "--"))
                    if m in curves}
        lines = {line.get_label(): line for line in ax.lines}
        assert len(lines) == len(ax.lines) and lines.keys() == expected.keys(), title
        for name, (curve, style, line_color) in expected.items():  # each line draws its own model's data
            line = lines[name]
            assert list(line.get_ydata()) == list(curve), (title, name)
            assert list(line.get_xdata()) == list(range(len(curve))), (title, name)
            assert line.get_linestyle() == style and line.get_color() == line_color, (title, name)
        assert ax.get_xlabel() and ax.get_ylabel()
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [line.get_label() for line in ax.lines]


def test_write_figures_writes_png_and_pdf(published, tmp_path):
    paths = write_figures(tmp_path, {}, published, logy=True)
    assert [p.name for p in paths] == [f"{name}_log.png" for name in FIGURES]
    assert all(p.stat().st_size > 10_000 and p.with_suffix(".pdf").exists() for p in paths)


def run_script(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd)


def test_compare_without_runs_prints_the_published_column_alone(data_dir, tmp_path):
    """As on a fresh clone: the default results/runs does not exist yet (another folder must hold runs)."""
    result = run_script(ROOT / "scripts" / "compare.py", "--data", data_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert "published curves" in header and "our runs" not in header
    assert "last epoch with two-stacked >= single: 266" in result.stdout
    assert "first <= 0.3980 at index 676" in result.stdout
    assert (tmp_path / "results" / "REPORT.md").exists() and (tmp_path / "results" / "report.json").exists()


def test_compare_and_figures_on_runs_write_a_reproducible_report(tiny_runs, data_dir, tmp_path):
    # a copy: the shared runs folder stays without outputs, as the refusal tests expect
    tiny_runs = shutil.copytree(tiny_runs, tmp_path / "runs")
    plot = run_script("scripts/plot.py", "--runs", str(tiny_runs), "--data", str(data_dir))
    assert plot.returncode == 0, plot.stderr
    first = run_script("scripts/compare.py", "--runs", str(tiny_runs), "--data", str(data_dir))
    assert first.returncode == 0, first.stderr
    assert "our runs" in first.stdout.splitlines()[0] and "not judgeable yet" in first.stdout
    assert "overview.png" in first.stdout
    report = (tiny_runs / "REPORT.md").read_text()
    for expected in ("## Our runs", torch.__version__, "state 16", "## Distance to the published curves", "figures/fig12"):
        assert expected in report
    second = run_script("scripts/compare.py", "--runs", str(tiny_runs), "--data", str(data_dir))
    assert second.returncode == 0
    def strip(text):
        return [line for line in text.splitlines() if not line.startswith("Generated: ")]
    assert strip((tiny_runs / "REPORT.md").read_text()) == strip(report)


def test_a_malformed_loss_file_is_named(tmp_path, data_dir):
    run = tmp_path / "runs" / "cerebral_lstm" / "seed0"
    run.mkdir(parents=True)
    (run / "loss.txt").write_text("[0] loss : 4.2\n[1] loss: 3.9\n")
    with pytest.raises(LossFileError, match=r"loss.txt, line 2"):
        find_runs(tmp_path / "runs")
    result = run_script("scripts/compare.py", "--runs", str(tmp_path / "runs"), "--data", str(data_dir))
    assert result.returncode != 0 and "loss.txt, line 2" in result.stderr


def test_a_data_folder_without_the_vocabulary_is_named_before_any_output(tmp_path, data_dir):
    """The report counts parameters under metadata.pkl's vocabulary: a data folder holding only the
    published curves is refused in one line, as other bad input, before the output folder is made."""
    shutil.copytree(data_dir / "loss_values", tmp_path / "data" / "loss_values")
    run = tmp_path / "runs" / "cerebral_lstm" / "seed0"
    run.mkdir(parents=True)
    (run / "loss.txt").write_text("[0] loss : 4.2\n[1] loss : 3.9\n")
    result = run_script("scripts/compare.py", "--runs", str(tmp_path / "runs"), "--data", str(tmp_path / "data"),
                        "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and result.stderr.startswith("error: ") and "metadata.pkl" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "out").exists()


def test_the_notebook_runs(tiny_runs, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    source = ROOT / "notebooks" / "compare.ipynb"
    notebook = nbformat.read(source, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "keep the notebook's output cells empty in git"
    monkeypatch.setenv("CEREBRAL_RUNS", str(tiny_runs))
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(source.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == len(FIGURES)
    assert any("C5" in o.get("data", {}).get("text/plain", "") for o in outputs)


COMMITTED_REPORTS = sorted(p.parent for p in (ROOT / "results").glob("**/REPORT.md"))


@pytest.mark.skipif(not COMMITTED_REPORTS, reason="no committed study under results/")
@pytest.mark.parametrize("study", COMMITTED_REPORTS, ids=lambda p: str(p.relative_to(ROOT / "results")))
def test_a_committed_report_is_regenerated_from_its_files(study, data_dir, tmp_path):
    """`make compare RUNS=results/<study>` gives the committed REPORT.md, all but the timestamp line."""
    copy = tmp_path / study.name
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("checkpoint*.pt"))
    write_report(copy, copy, data_dir)
    assert json.loads((copy / "report.json").read_text()) == json.loads((study / "report.json").read_text())

    def strip(text):
        return [line for line in text.splitlines() if not line.startswith("Generated: ")]
    assert strip((copy / "REPORT.md").read_text()) == strip((study / "REPORT.md").read_text())


def test_a_single_seed_report_states_the_seed_spread_of_the_seeds_study(tmp_path):
    study = tmp_path / "seeds"
    for seed, losses in enumerate([[4.0, 3.0, 2.0], [4.1, 3.0, 2.05], [3.95, 3.02, 2.0]]):
        run = study / "cerebral_lstm" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "loss.txt").write_text("".join(f"[{i}] loss : {v}\n" for i, v in enumerate(losses)))
    note = report.single_seed_note(study)
    assert "one run (one seed) per model" in note and "3 seeds, the first 3 epochs" in note
    assert "Cerebral LSTM 0.150 (epoch 0)" in note
    assert report.single_seed_note(tmp_path / "absent") == "Each verdict on our runs rests on one run (one seed) per model."
