"""The studies beyond the paper: held-out loss, seed sweeps through Hydra multirun and its
launchers, the presets in conf/experiment/, banded figures and per-seed claim counts."""

import csv
import json
import math
import subprocess
import sys

import pytest
from conftest import ROOT, load_script, tiny_overrides
from omegaconf import OmegaConf

from cerebral import claims
from cerebral.config import ConfigError, compose
from cerebral.curves import Run, band, find_runs, mean_curve
from cerebral.plots import write_figures
from cerebral.train import train

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
TINY = ["model.state_size=8", "train.steps_per_epoch=2", "train.batch_size=4", "train.epochs=2", "device=cpu"]


def metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_held_out_loss_and_bits_per_character_each_epoch(data_dir, tmp_path):
    run = tmp_path / "run"
    train(compose(*tiny_overrides(data_dir, run, "data.val_fraction=0.05")))
    rows = metrics(run)
    assert len(rows) == 2
    for row in rows:
        loss, bpc = float(row["val_loss"]), float(row["val_bpc"])
        assert 2.0 < loss < 5.0 and bpc == pytest.approx(loss / math.log(2))
    assert float(rows[1]["val_loss"]) != float(rows[0]["val_loss"])


def test_without_a_held_out_block_the_columns_stay_empty_and_with_one_training_sees_less(data_dir, tmp_path):
    plain = train(compose(*tiny_overrides(data_dir, tmp_path / "a")))
    assert all(row["val_loss"] == "" for row in metrics(tmp_path / "a"))
    held_out = train(compose(*tiny_overrides(data_dir, tmp_path / "b", "data.val_fraction=0.5")))
    assert held_out != plain  # the batches come from the first half only


@pytest.mark.parametrize("fraction,message", [(1.0, "data.val_fraction must be a number in [0, 1)"),
                                              (1e-9, "holds out no sequence"),
                                              (0.99999, "data.val_fraction=0.99999 leaves 0 of")])
def test_bad_held_out_fractions_are_refused(data_dir, tmp_path, fraction, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        train(compose(*tiny_overrides(data_dir, tmp_path / "run", f"data.val_fraction={fraction}")))
    assert not (tmp_path / "run").exists()


def fake_run(tmp_path, model, seed, losses, val=None):
    path = tmp_path / model / f"seed{seed}"
    path.mkdir(parents=True)
    (path / "loss.txt").write_text("".join(f"[{i}] loss : {v}\n" for i, v in enumerate(losses)))
    rows = ["epoch,train_loss,seconds,chars_per_second,val_loss,val_bpc"]
    rows += [f"{i},{v},1.0,1.0,{'' if val is None else val[i]},{'' if val is None else val[i] / math.log(2)}"
             for i, v in enumerate(losses)]
    (path / "metrics.csv").write_text("\n".join(rows) + "\n")
    return path


def test_any_model_name_is_found_and_bands_span_the_seeds(tmp_path):
    fake_run(tmp_path, "cerebral_lstm", 0, [3.0, 2.0, 1.0], val=[3.5, 2.5, 2.0])
    fake_run(tmp_path, "cerebral_lstm", 1, [4.0, 2.0], val=[4.5, 3.0])
    fake_run(tmp_path, "my_variant", 0, [3.0, 1.0])
    fake_run(tmp_path, "single_lstm", 0, [5.0])
    runs = find_runs(tmp_path)
    assert list(runs) == ["single_lstm", "cerebral_lstm", "my_variant"]  # the paper's first
    cerebral = runs["cerebral_lstm"]
    assert mean_curve(cerebral) == [3.5, 2.0]
    assert band(cerebral) == ([3.0, 2.0], [4.0, 2.0])
    assert mean_curve(cerebral, "val_loss") == [4.0, 2.75]
    assert band(runs["my_variant"]) is None and mean_curve(runs["my_variant"], "val_loss") is None


def test_figures_draw_bands_a_study_figure_and_held_out_loss(tmp_path):
    fake_run(tmp_path / "runs", "cerebral_lstm", 0, [3.0, 2.0], val=[3.5, 2.5])
    fake_run(tmp_path / "runs", "cerebral_lstm", 1, [4.0, 2.5], val=[4.5, 3.0])
    fake_run(tmp_path / "runs", "cerebral_lstm_tied", 0, [3.0, 2.2])
    runs = find_runs(tmp_path / "runs")
    names = {p.stem for p in write_figures(tmp_path / "fig", runs, {})}
    assert {"overview", "study", "held_out"} <= names
    assert (tmp_path / "fig" / "held_out.pdf").exists()

    from cerebral.plots import draw
    ax = draw("t", list(runs), {m: mean_curve(rs) for m, rs in runs.items()}, {},
              bands={m: band(rs) for m, rs in runs.items()}).axes[0]
    assert len(ax.collections) == 1  # one band: only cerebral_lstm has two seeds


def test_claims_are_counted_per_seed():
    def run(model, seed, losses):
        return Run(model, seed, None, losses)
    good, bad = [1.0] * 500, [2.0] * 500
    runs = {"single_lstm": [run("single_lstm", s, [1.5] * 500) for s in range(3)],
            "cerebral_lstm": [run("cerebral_lstm", 0, good), run("cerebral_lstm", 1, bad), run("cerebral_lstm", 2, good)]}
    per_seed = claims.judge_per_seed(runs)
    assert sorted(per_seed) == [0, 1, 2]
    assert [per_seed[s]["C1"].holds for s in range(3)] == [True, False, True]
    counts = claims.seed_counts(per_seed)
    assert counts["C1"] == "2/3 seeds"
    assert counts["C2"] == "0/3 seeds (0 fail, 3 not judgeable yet)"  # no two-stacked curve
    assert "per seed" in claims.claims_table(claims.judge_all({}), claims.judge_all({}), per_seed)


def multirun(data_dir, runs_dir, *overrides, timeout=300):
    command = [sys.executable, "-m", "cerebral.train", "-m", f"data.dir={data_dir}", f"runs_dir={runs_dir}",
               f"hydra.sweep.dir={runs_dir}/multirun", *TINY, *overrides]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# CI runs all but the two slowest presets (make test-slow runs every one)
SLOW_PRESETS = ("ablation_printed", "equal_size")


@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW_PRESETS else p for p in PRESETS])
def test_each_preset_runs_end_to_end_at_tiny_size(preset, data_dir, tmp_path):
    """The preset's sweep (one seed), then its figures and report from the same folder."""
    runs_dir = tmp_path / "study"
    multirun(data_dir, runs_dir, f"experiment={preset}", "seed=0")
    swept = OmegaConf.load(ROOT / "conf" / "experiment" / f"{preset}.yaml").hydra.sweeper.params.model.split(",")
    found = find_runs(runs_dir)
    assert list(found) == [m for m in ["single_lstm", "stacked_lstm", "cerebral_lstm"] if m in swept] + \
        sorted(m for m in swept if m not in ("single_lstm", "stacked_lstm", "cerebral_lstm"))
    assert all(len(rs) == 1 and len(rs[0].losses) == 2 for rs in found.values())
    for script in ("plot", "compare"):  # in this process: the commands' own tests start them as programs
        load_script(script).main(["--runs", str(runs_dir), "--data", str(data_dir)])
    report = (runs_dir / "REPORT.md").read_text()
    assert all(f"| {m} | " in report for m in swept)
    if preset == "generalization":
        assert "## Held-out loss" in report and (runs_dir / "figures" / "held_out.png").exists()
    recorded = json.loads((runs_dir / "report.json").read_text())["parameters"]
    assert set(recorded) == set(swept) and all(n > 0 for n in recorded.values())


@pytest.mark.slow  # CI time: the joblib sweep above checks a launcher plugin
def test_a_seed_sweep_through_submitit_local(data_dir, tmp_path):
    runs_dir = tmp_path / "sweep"
    multirun(data_dir, runs_dir, "hydra/launcher=submitit_local", "seed=0,1", "model=single_lstm",
             "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1")
    runs = find_runs(runs_dir)["single_lstm"]
    assert [r.seed for r in runs] == [0, 1] and runs[0].losses != runs[1].losses


def test_a_seed_sweep_through_joblib(data_dir, tmp_path):
    runs_dir = tmp_path / "sweep"
    multirun(data_dir, runs_dir, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=3,4",
             "model=cerebral_lstm")
    assert [r.seed for r in find_runs(runs_dir)["cerebral_lstm"]] == [3, 4]
    # The same run trained in-process gives the same curve: the launcher changes nothing else.
    direct = train(compose(f"data.dir={data_dir}", f"out_dir={tmp_path / 'direct'}", *TINY, "seed=3"))
    assert find_runs(runs_dir)["cerebral_lstm"][0].losses == direct


def test_a_preset_runs_its_sweep_without_dash_m(data_dir, tmp_path):
    command = [sys.executable, "-m", "cerebral.train", "experiment=seeds", "model=single_lstm", "seed=0,1", "debug=tiny",
               f"data.dir={data_dir}", f"runs_dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/multirun"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "single_lstm").iterdir()) == ["seed0", "seed1"]


def test_the_debug_preset_runs_a_classification_task_too(tmp_path, recorded_steps):
    """A task's shuffled pass keeps the preset's 3 steps an epoch."""
    assert len(train(compose("task=digits", "debug=tiny", f"runs_dir={tmp_path}"))) == 2
    assert len(recorded_steps) == 2 * 3


def test_the_debug_preset_is_a_run_of_seconds_in_its_own_folder():
    cfg = compose("debug=tiny", "model=stacked_lstm")
    assert (cfg.model.state_size, cfg.train.epochs, cfg.train.steps_per_epoch, cfg.train.batch_size) == (16, 2, 3, 8)
    assert cfg.device == "cpu" and cfg.out_dir == "results/debug/stacked_lstm/seed0"
