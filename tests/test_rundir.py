"""The run directory: a corrupt checkpoint, a moved folder, a folder of the previous commit, the
recorded command, and a runs folder that mixes tasks."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

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
    (warning,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert "cannot be read as a checkpoint" in warning and "resuming from" in warning and "after epoch 1" in warning
    assert "delete" not in warning.lower() and "miniz" not in warning and len(warning) < 250  # no fix to contradict
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
    assert "checkpoint.pt does not exist; resuming from" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"junk\n", b"PK\x03\x04" + b"\0" * 64])
def test_an_unreadable_checkpoint_is_one_line_naming_the_file_and_the_fix(content, data_dir, tmp_path):
    run = tmp_path / "run"
    train(tiny(data_dir, run, "train.epochs=1"))
    (run / rundir.CHECKPOINT).write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint") as error:
        train(tiny(data_dir, run, "train.epochs=2"))
    assert str(run / rundir.CHECKPOINT) in str(error.value) and f"delete {run}" in str(error.value)
    one_line_error("-m", "cerebral.train", *tiny_overrides(data_dir, run, "train.epochs=2"))


def one_line_error(*args):
    """`python ARGS` run from the repository root, which must exit with status 1 and one `error: `
    line on stderr (no traceback); returns that line."""
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: "), line
    return line


def files(run):
    """Every file in `run` with its bytes, to show that a refusal changed nothing."""
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.name != ".train.lock"}


def test_a_checkpoint_and_its_backup_that_are_not_zip_files_are_one_line_in_every_command(data_dir, tmp_path):
    runs = tmp_path / "runs"
    run = runs / "cerebral_lstm" / "seed0"
    settings = ["debug=tiny", f"data.dir={data_dir}", f"runs_dir={runs}"]
    train(compose(*settings, "train.epochs=2"))
    for name in (rundir.CHECKPOINT, rundir.PREVIOUS_CHECKPOINT):
        (run / name).write_text("junk\n")  # torch.load's legacy path fails with a KeyError on it
    before = files(run)
    for command in (["-m", "cerebral.train", *settings, "train.epochs=3"], ["-m", "cerebral.generate", str(run)],
                    ["scripts/late_precision.py", "evaluate", str(run)],
                    ["scripts/reproduce.py", "--plan-only", *settings]):
        line = one_line_error(*command)
        assert "checkpoint.pt cannot be read as a checkpoint" in line and "checkpoint.prev.pt cannot be read" in line
        assert f"delete {run} to train the run again from epoch 0" in line
    assert files(run) == before


@pytest.mark.parametrize("saved", [{"a": 1}, [1, 2]])
def test_a_torch_file_that_is_no_checkpoint_of_this_project_is_called_that(saved, tmp_path):
    torch.save(saved, tmp_path / rundir.CHECKPOINT)
    with pytest.raises(CheckpointError, match="is not a checkpoint of this project") as error:
        rundir.read_checkpoint(tmp_path / rundir.CHECKPOINT)
    assert "another version" not in str(error.value)


def test_a_missing_checkpoint_is_said_not_to_exist(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint.pt does not exist") as error:
        rundir.read_checkpoint(tmp_path / rundir.CHECKPOINT)
    assert "cut short" not in str(error.value) and "Errno" not in str(error.value)


def test_weights_that_do_not_fit_the_model_are_one_line_naming_the_run(data_dir, tmp_path):
    run = tmp_path / "run"
    train(tiny(data_dir, run, "train.epochs=1"))
    state = torch.load(run / rundir.CHECKPOINT, weights_only=True)
    state["model"]["head.bias"] = torch.zeros(5)  # another vocabulary's head: the format field is right
    torch.save(state, run / rundir.CHECKPOINT)
    before = files(run)
    with pytest.raises(CheckpointError, match=r"does not fit the model .* \(size mismatch for head.bias\)") as error:
        train(tiny(data_dir, run, "train.epochs=2"))
    assert f"in {run} " in str(error.value) and f"delete {run}" in str(error.value)
    assert "\n" not in str(error.value) and files(run) == before
    line = one_line_error("-m", "cerebral.generate", str(run))
    assert "does not fit the model" in line


@pytest.mark.parametrize(("content", "problem"), [("not: [valid\n", "cannot be read as a config"),
                                                  ("", "is empty")])
def test_a_damaged_config_yaml_is_one_line_with_the_fix(content, problem, data_dir, tmp_path):
    run = tmp_path / "run"
    train(tiny(data_dir, run, "train.epochs=1"))
    (run / rundir.CONFIG).write_text(content)
    before = files(run)
    with pytest.raises(ConfigError, match=f"config.yaml {problem}: restore it from git, or delete {run}") as error:
        train(tiny(data_dir, run, "train.epochs=2"))
    assert "\n" not in str(error.value) and files(run) == before
    assert problem in one_line_error("-m", "cerebral.generate", str(run))


def test_a_damaged_run_json_is_refused_before_any_work(data_dir, tmp_path):
    run = tmp_path / "run"
    train(tiny(data_dir, run, "train.epochs=1"))
    (run / rundir.RECORD).write_text("{bad")
    before = files(run)
    result = subprocess.run([sys.executable, "-m", "cerebral.train", *tiny_overrides(data_dir, run, "train.epochs=2")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr and result.stdout == ""  # no start line
    assert result.stderr.strip() == f"error: {run / rundir.RECORD} cannot be read as a run record: restore it from " \
                                    "git, or delete it (the run resumes; the record of its earlier sessions is lost)"
    assert files(run) == before


@pytest.mark.parametrize("below", ["", "sub"])
def test_an_out_dir_in_the_place_of_a_file_is_one_line(below, data_dir, tmp_path):
    file = tmp_path / "file"
    file.write_text("kept")
    out_dir = file / below if below else file
    line = one_line_error("-m", "cerebral.train", *tiny_overrides(data_dir, out_dir))
    assert line == f"error: out_dir={out_dir} cannot be a folder: {file} is a file; use another out_dir=PATH"
    assert file.read_text() == "kept"


def test_an_out_dir_that_cannot_be_created_is_one_line(data_dir):
    out_dir = Path("/proc/cerebral-test-run")  # no folder can be made in /proc, not even by root
    with pytest.raises(ConfigError, match=rf"cannot create out_dir={out_dir} \(.+\); use another out_dir=PATH"):
        train(tiny(data_dir, out_dir))


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
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the count it trained with: a run resumes only on that
    try:
        train(tiny(data_dir, run, "model=cerebral_lstm", "train.epochs=3"))
    finally:
        torch.set_num_threads(threads)
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
    assert rundir.read_metrics(kept)["seconds"] == rundir.read_metrics(straight)["seconds"]
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
    recorded = rundir.read_config(tmp_path / "cerebral_lstm" / "seed0")["train"]["elementwise"]  # seq or aten by CPU
    assert rows["single_lstm"][1:4] == ["aten", "3", "3"] and rows["cerebral_lstm"][1:4] == [recorded, "3", "0"]
    assert "cerebral_lstm: loss.txt records 3 epochs, the checkpoint 0: epochs 0-2 train again" in result.stdout
    assert "single_lstm: loss.txt" not in result.stdout


def test_a_checkpoint_that_does_not_fit_its_model_is_refused_before_any_run_trains(data_dir, tmp_path):
    settings = ["debug=tiny", f"data.dir={data_dir}", f"runs_dir={tmp_path}", "train.epochs=1"]
    train(compose("model=cerebral_lstm", *settings))
    checkpoint = tmp_path / "cerebral_lstm" / "seed0" / rundir.CHECKPOINT
    state = torch.load(checkpoint, weights_only=True)
    state["model"]["head.bias"] = torch.zeros(5)  # a checkpoint of another vocabulary copied in
    torch.save(state, checkpoint)
    for plan_only in (["--plan-only"], []):
        line = one_line_error("scripts/reproduce.py", *plan_only, *settings)
        assert f"the checkpoint in {checkpoint.parent} does not fit the model" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cerebral_lstm"]  # the other models never trained


@pytest.mark.parametrize("override", ["model=bogus", "bogus=1", "notanoverride"])
def test_the_plan_refuses_a_bad_override_in_one_line(override):
    assert override.split("=")[0] in one_line_error("scripts/reproduce.py", "--plan-only", override)


def test_a_run_folder_of_another_configuration_is_refused_before_any_run_trains(data_dir, tmp_path):
    settings = [f"data.dir={data_dir}", f"runs_dir={tmp_path}", "train.batch_size=8", "train.steps_per_epoch=2",
                "train.epochs=1", "device=cpu"]
    train(compose("model=cerebral_lstm", "model.state_size=8", *settings))
    command = [sys.executable, "scripts/reproduce.py", "model.state_size=16", *settings]
    for plan_only in (["--plan-only"], []):
        result = subprocess.run(command + plan_only, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith(f"error: {tmp_path / 'cerebral_lstm' / 'seed0'} holds a run with another "
                                        "configuration:\n  model.state_size: 8 -> 16\n")
        assert result.stdout == ""  # neither the plan nor a run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cerebral_lstm"]  # the other models never trained


def test_every_committed_run_records_the_kernels_it_trained_on():
    """A run folder resumes on the backend and elementwise kernel its config.yaml records: a
    recorded `auto` would be compared with the value decided now, and the folder refused."""
    configs = sorted((ROOT / "results").rglob(rundir.CONFIG))
    assert configs
    for path in configs:
        train = rundir.read_config(path.parent).get("train", {})
        assert "auto" not in (train.get("backend"), train.get("elementwise")), path
