"""The run directory: a corrupt checkpoint, a moved folder, a folder of the previous commit, the
recorded command, and a runs folder that mixes tasks."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, tiny_overrides

from cerebral import rundir
from cerebral.config import compose, config_differences
from cerebral.errors import CheckpointError, ConfigError, TrainingDiverged
from cerebral.losslog import read_losses, write_losses
from cerebral.report import write_report
from cerebral.steps import cpu_features, device_name
from cerebral.train import train

FIXTURES = ROOT / "tests" / "fixtures"


def tiny(data_dir, run, *extra):
    return compose(*tiny_overrides(data_dir, run, *extra))


def test_a_truncated_checkpoint_is_recovered_from_the_previous_epoch(data_dir, tmp_path, capsys):
    straight = train(tiny(data_dir, tmp_path / "straight", "train.epochs=3"))
    run = tmp_path / "run"
    train(tiny(data_dir, run, "train.epochs=3"))
    checkpoint = run / rundir.CHECKPOINT
    assert (run / rundir.PREVIOUS_CHECKPOINT).exists()
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # a copy cut short
    assert train(tiny(data_dir, run, "train.epochs=3")) == straight
    assert (run / "loss.txt").read_bytes() == (tmp_path / "straight" / "loss.txt").read_bytes()
    out = capsys.readouterr().out
    assert "cannot be read as a checkpoint" in out and "resuming from" in out and "after epoch 1" in out
    # the unreadable file is set aside, so the next epoch's backup is a good checkpoint, not it
    assert (run / rundir.UNREADABLE_CHECKPOINT).stat().st_size == 1000
    assert len(rundir.read_checkpoint(run / rundir.PREVIOUS_CHECKPOINT)["history"]) == 2
    assert len(rundir.read_checkpoint(checkpoint)["history"]) == 3


def test_a_missing_checkpoint_resumes_from_the_previous_one_and_says_so(data_dir, tmp_path, capsys):
    straight = train(tiny(data_dir, tmp_path / "straight", "train.epochs=3"))
    run = tmp_path / "run"
    train(tiny(data_dir, run, "train.epochs=3"))
    (run / rundir.CHECKPOINT).unlink()
    assert train(tiny(data_dir, run, "train.epochs=3")) == straight
    assert "is missing; resuming from" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04" + b"\0" * 64])
def test_an_unreadable_checkpoint_is_one_line_naming_the_file_and_the_fix(content, data_dir, tmp_path):
    run = tmp_path / "run"
    train(tiny(data_dir, run, "train.epochs=1"))
    (run / rundir.CHECKPOINT).write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint") as error:
        train(tiny(data_dir, run, "train.epochs=2"))
    assert str(run / rundir.CHECKPOINT) in str(error.value) and "Delete" in str(error.value)
    result = subprocess.run([sys.executable, "-m", "cerebral.train", *tiny_overrides(data_dir, run, "train.epochs=2")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: ") and result.stderr.strip().count("\n") == 0


def test_a_moved_run_folder_resumes_and_extends(data_dir, tmp_path):
    straight = train(tiny(data_dir, tmp_path / "straight", "train.epochs=3"))
    train(tiny(data_dir, tmp_path / "here", "train.epochs=2"))
    shutil.move(tmp_path / "here", tmp_path / "elsewhere")
    data_copy = shutil.copytree(data_dir, tmp_path / "data", ignore=shutil.ignore_patterns("README.md"))
    assert train(tiny(data_copy, tmp_path / "elsewhere", "train.epochs=3")) == straight


def test_only_the_keys_that_say_where_things_are_may_change_besides_the_length():
    saved = {"out_dir": "a", "runs_dir": "r", "train": {"epochs": 5}, "data": {"dir": "d", "mnist_dir": "m",
                                                                             "imdb_csv": "i"}}
    moved = {"out_dir": "b", "runs_dir": "s", "train": {"epochs": 9}, "data": {"dir": "e", "mnist_dir": "m",
                                                                             "imdb_csv": "i"}}
    assert config_differences(saved, moved) == []
    other_files = {**moved, "data": {"dir": "e", "mnist_dir": "n", "imdb_csv": "j"}}
    assert config_differences(saved, other_files) == ["data.imdb_csv: 'i' -> 'j'", "data.mnist_dir: 'm' -> 'n'"]


def test_a_run_folder_of_the_previous_commit_resumes_with_the_same_numbers(data_dir, tmp_path):
    """A tiny Cerebral run trained 2 epochs by commit 53a5657 (the full-length runs' start, before
    train.precision existed), resumed here to 3: the third epoch equals the one that commit trained."""
    run = shutil.copytree(FIXTURES / "run_53a5657", tmp_path / "run")
    expected = read_losses(run / "loss_after_3_epochs.txt")
    train(tiny(data_dir, run, "model=cerebral_lstm", "train.epochs=3"))
    assert read_losses(run / "loss.txt") == pytest.approx(expected, rel=1e-6, abs=0)  # any CPU
    made_on = rundir.read_record(FIXTURES / "run_53a5657")["sessions"][0]["device"]
    if made_on == device_name(torch.device("cpu")):  # the machine that made it: bit for bit
        assert read_losses(run / "loss.txt") == expected


def test_run_json_records_the_command_as_a_user_types_it(data_dir, tmp_path):
    assert rundir.command_line(["/any/where/cerebral/train.py", "seed=1", "out_dir=a b"]) == \
        "python -m cerebral.train seed=1 'out_dir=a b'"
    assert rundir.command_line([str(ROOT / "scripts" / "reproduce.py"), "train.epochs=2"]) == \
        "python scripts/reproduce.py train.epochs=2"
    run = tmp_path / "run"
    overrides = tiny_overrides(data_dir, run, "train.epochs=1")
    subprocess.run([sys.executable, "-m", "cerebral.train", *overrides], cwd=ROOT, check=True, capture_output=True)
    (session,) = json.loads((run / "run.json").read_text())["sessions"]
    assert session["command"] == "python -m cerebral.train " + " ".join(overrides)
    assert session["cpu"] == cpu_features()


INTEL_WITH_AMX = "processor\t: 0\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Processor\n" \
                 "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\nprocessor\t: 1\ncpu family\t: 6\n"


def test_cpu_features_tell_apart_cpus_that_report_one_model_name():
    assert cpu_features(INTEL_WITH_AMX) == "cpu family 6, model 143; avx512_bf16 amx_bf16"
    without_amx = INTEL_WITH_AMX.replace("model\t\t: 143", "model\t\t: 85").replace(" avx512_bf16 amx_bf16 amx_tile", "")
    assert cpu_features(without_amx) == "cpu family 6, model 85; no bf16 flags"
    assert cpu_features("processor\t: 0\nBogoMIPS\t: 50.00\n") == ""  # e.g. an ARM cpuinfo


def test_figures_and_report_refuse_a_runs_folder_that_mixes_tasks(data_dir, tmp_path):
    runs = tmp_path / "runs"
    train(tiny(data_dir, runs / "cerebral_lstm" / "seed0", "train.epochs=1"))
    train(compose("task=digits", "model=single_lstm", "model.state_size=8", "train.epochs=1", "device=cpu",
                  f"out_dir={runs / 'single_lstm' / 'seed0'}"))
    with pytest.raises(SystemExit, match="mix the tasks charlm, digits"):
        write_report(runs, runs, data_dir)
    for script in ("scripts/plot.py", "scripts/compare.py"):
        result = subprocess.run([sys.executable, script, "--runs", str(runs), "--data", str(data_dir)],
                                cwd=ROOT, capture_output=True, text=True)
        assert result.returncode != 0 and "mix the tasks charlm, digits" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (runs / "REPORT.md").exists() and not (runs / "figures").exists()


def test_a_changed_setting_is_still_refused(data_dir, tmp_path):
    train(tiny(data_dir, tmp_path / "run", "train.epochs=1"))
    with pytest.raises(ConfigError, match="model.state_size: 16 -> 8"):
        train(tiny(data_dir, tmp_path / "run", "model.state_size=8"))


def clone_without_checkpoints(run, into):
    """What a fresh clone holds of a run: its committed files, no checkpoint."""
    return shutil.copytree(run, into, ignore=shutil.ignore_patterns("checkpoint*.pt", ".train.lock"))


def test_recorded_epochs_without_a_checkpoint_train_again_and_are_checked(data_dir, tmp_path, capsys):
    straight = tmp_path / "straight"
    train(tiny(data_dir, straight, "train.epochs=3"))
    run = clone_without_checkpoints(straight, tmp_path / "clone")
    recorded = (straight / "loss.txt").read_bytes()
    train(tiny(data_dir, run, "train.epochs=2"))  # part of the record: the rest stays in the outputs
    assert "records 3 epochs, it has no checkpoint; training epochs 0-1 again" in capsys.readouterr().out
    assert (run / "loss.txt").read_bytes() == recorded
    assert (run / "metrics.csv").read_bytes() == (straight / "metrics.csv").read_bytes()  # timings too
    assert len(rundir.read_history(run, rundir.METRICS_COLUMNS)) == 3
    assert train(tiny(data_dir, run, "train.epochs=4"))[:3] == read_losses(straight / "loss.txt")
    out = capsys.readouterr().out
    assert "its checkpoint holds 2; training epochs 2-2 again" in out and "epochs 2-2 repeated the record bit for bit" in out
    assert (run / "loss.txt").read_bytes().startswith(recorded) and not (run / rundir.RECORDED_LOSSES).exists()
    assert rundir.read_record(run)["sessions"][-1]["replay"] == {"recorded_epochs": 3, "identical": True}


def test_a_record_the_training_does_not_repeat_is_kept_beside_the_new_curve(data_dir, tmp_path, capsys):
    straight = tmp_path / "straight"
    expected = train(tiny(data_dir, straight, "train.epochs=3"))
    run = clone_without_checkpoints(straight, tmp_path / "clone")
    record = read_losses(run / "loss.txt")
    record[1] += 1e-9  # as another CPU's rounding would
    write_losses(run / "loss.txt", record)
    assert train(tiny(data_dir, run, "train.epochs=3")) == expected
    assert "warning: epoch 1 gave loss" in capsys.readouterr().out
    assert read_losses(run / rundir.RECORDED_LOSSES) == record
    kept = run / "kept"  # metrics.recorded.csv holds the recorded timings
    kept.mkdir()
    shutil.copy(run / rundir.RECORDED_METRICS, kept / "metrics.csv")
    assert rundir.read_metric(kept, "seconds") == rundir.read_metric(straight, "seconds")
    assert (run / "loss.txt").read_bytes() == (straight / "loss.txt").read_bytes()
    replay = rundir.read_record(run)["sessions"][-1]["replay"]
    assert replay["first_difference"] == {"epoch": 1, "recorded": record[1], "trained": expected[1]}
    # trained again once more from another record (its checkpoint lost too): the first kept one stays
    second = clone_without_checkpoints(run, tmp_path / "second")
    other = [loss - 1e-9 for loss in expected]
    write_losses(second / "loss.txt", other)
    train(tiny(data_dir, second, "train.epochs=3"))
    assert read_losses(second / rundir.RECORDED_LOSSES) == record
    assert read_losses(second / "loss.recorded-2.txt") == other and (second / "metrics.recorded-2.csv").exists()
    # the same record again (a crash right after keeping it): not kept twice
    third = clone_without_checkpoints(second, tmp_path / "third")
    write_losses(third / "loss.txt", other)
    train(tiny(data_dir, third, "train.epochs=3"))
    assert not (third / "loss.recorded-3.txt").exists()


def test_a_run_stopped_by_a_non_finite_loss_while_checking_the_record_keeps_it_and_says_so(data_dir, tmp_path):
    straight = tmp_path / "straight"
    train(tiny(data_dir, straight, "train.epochs=3"))
    run = clone_without_checkpoints(straight, tmp_path / "clone")
    recorded = (run / "loss.txt").read_bytes()
    train(tiny(data_dir, run, "train.epochs=1"))
    state = torch.load(run / rundir.CHECKPOINT, weights_only=True)
    state["model"]["head.bias"].fill_(float("nan"))  # epoch 1 cannot repeat its record now
    torch.save(state, run / rundir.CHECKPOINT)
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step 0.*does not repeat it; loss.txt keeps the record"):
        train(tiny(data_dir, run, "train.epochs=3"))
    assert (run / "loss.txt").read_bytes() == recorded
    replay = rundir.read_record(run)["sessions"][-1]["replay"]
    assert replay == {"recorded_epochs": 3, "stopped_at_epoch": 1, "recorded": read_losses(straight / "loss.txt")[1]}


def test_outputs_that_are_not_the_checkpoints_are_kept_not_extended(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    expected = train(tiny(data_dir, run, "train.epochs=3"))
    (run / rundir.CHECKPOINT).unlink()  # resumes from epoch 2's checkpoint.prev.pt
    foreign = [loss + 1.0 for loss in expected]
    write_losses(run / "loss.txt", foreign)
    assert train(tiny(data_dir, run, "train.epochs=3")) == expected
    assert "differs from its checkpoint at epoch 0" in capsys.readouterr().out
    assert read_losses(run / rundir.RECORDED_LOSSES) == foreign


def test_the_plan_counts_from_the_checkpoint_and_names_recorded_epochs_that_train_again(data_dir, tmp_path):
    settings = [f"data.dir={data_dir}", f"runs_dir={tmp_path}", "model.state_size=8", "train.batch_size=8",
                "train.steps_per_epoch=2", "train.epochs=3", "device=cpu"]
    for model in ("single_lstm", "cerebral_lstm"):
        train(compose(f"model={model}", *settings))
    for checkpoint in (tmp_path / "cerebral_lstm" / "seed0").glob("checkpoint*.pt"):
        checkpoint.unlink()  # as in a fresh clone
    result = subprocess.run([sys.executable, "scripts/reproduce.py", "--plan-only", *settings],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.endswith("seed0")}
    assert rows["single_lstm"][1:3] == ["3", "3"] and rows["cerebral_lstm"][1:3] == ["3", "0"]
    assert "cerebral_lstm: loss.txt records 3 epochs, the checkpoint 0: epochs 0-2 train again" in result.stdout
    assert "single_lstm: loss.txt" not in result.stdout
