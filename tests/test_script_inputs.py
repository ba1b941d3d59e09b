"""Bad input to the scripts gets one `error: ...` line on stderr and exit status 1, before any
work and without writing anything: never a traceback, never an empty or published-only output
mistaken for a comparison of runs."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, load_script
from omegaconf import OmegaConf

from cerebral import evaluate, export, generate
from cerebral.config import compose
from cerebral.errors import ConfigError
from cerebral.models import build_core
from cerebral.train import train


class Refusal:
    """How a script ended: its exit status, and what it wrote to stdout and stderr."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run_script(capsys):
    """Runs `scripts/NAME.py ARGS`, or a module's main such as cerebral.generate's, in this process
    (a subprocess would spend seconds importing torch for each refusal), its `sys.exit("error: ...")`
    read as Python would print it."""

    def run(script, *args):
        main = load_script(script).main if isinstance(script, str) else script.main
        with pytest.raises(SystemExit) as ended:
            main([str(arg) for arg in args])
        out, err = capsys.readouterr()
        code = ended.value.code
        return Refusal(1, out, err + f"{code}\n") if isinstance(code, str) else Refusal(code, out, err)

    return run


def assert_refused(result, *expected):
    """One `error:` line naming each of `expected`, exit status 1, nothing on stdout."""
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for text in expected:
        assert text in result.stderr


@pytest.fixture
def runs(tiny_runs, tmp_path):
    """A copy of the tiny runs to spoil."""
    return shutil.copytree(tiny_runs, tmp_path / "runs")


def not_utf8(path):
    path.write_bytes(b"\xff\xfe[0] loss : 4.2\n")


def a_folder(path):
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("script,spoil", [("plot", not_utf8), ("compare", a_folder), ("fidelity", a_folder)])
def test_an_unreadable_loss_file_is_named(runs, data_dir, script, spoil, run_script):
    loss_file = runs / "cerebral_lstm" / "seed0" / "loss.txt"
    spoil(loss_file)
    sides = ("--reference", runs) if script == "fidelity" else ()
    assert_refused(run_script(script, "--runs", runs, *sides, "--data", data_dir),
                   f"{loss_file} cannot be read as a loss file")
    assert not (runs / "figures").exists() and not (runs / "REPORT.md").exists()
    assert not (runs / "FIDELITY.md").exists()


def test_an_output_path_that_is_a_file_is_refused(runs, data_dir, tmp_path, run_script):
    taken = tmp_path / "taken"
    taken.write_text("")
    assert_refused(run_script("compare", "--runs", taken, "--data", data_dir), f"no runs found under {taken}")
    assert_refused(run_script("plot", "--runs", runs, "--out", taken, "--data", data_dir),
                   f"cannot make the output folder {taken / 'figures'}", "choose another --out")
    assert_refused(run_script("compare", "--runs", runs, "--out", taken / "report", "--data", data_dir),
                   f"cannot make the output folder {taken / 'report'}")
    assert_refused(run_script("fidelity", "--runs", runs, "--reference", runs, "--out", tmp_path, "--data", data_dir),
                   f"--out {tmp_path} is a folder")
    assert taken.read_text() == "" and not (runs / "figures").exists() and not (runs / "REPORT.md").exists()


def test_a_folder_without_runs_is_refused(runs, data_dir, tmp_path, run_script):
    absent = tmp_path / "absent" / "runs"
    assert_refused(run_script("plot", "--runs", absent, "--data", data_dir),
                   f"no runs found under {absent}", "MODEL/seedN/loss.txt")
    assert_refused(run_script("fidelity", "--runs", absent, "--reference", runs, "--data", data_dir),
                   f"no runs found under {absent}")
    assert_refused(run_script("fidelity", "--runs", runs, "--reference", absent, "--data", data_dir),
                   f"no runs found under {absent}")
    assert not (tmp_path / "absent").exists() and not (runs / "FIDELITY.md").exists()
    one_run = runs / "cerebral_lstm" / "seed0"
    assert_refused(run_script("compare", "--runs", one_run, "--data", data_dir), f"no runs found under {one_run}")
    assert not (one_run / "REPORT.md").exists()


def test_a_run_filed_under_another_model_is_refused(runs, data_dir, run_script):
    misfiled = runs / "cerebral_lstm" / "seed0"
    shutil.rmtree(misfiled)
    shutil.copytree(runs / "single_lstm" / "seed0", misfiled)
    for script in ("compare", "plot"):
        assert_refused(run_script(script, "--runs", runs, "--data", data_dir),
                       f"{misfiled} is filed as cerebral_lstm, but its config.yaml says model single_lstm")
    assert not (runs / "REPORT.md").exists() and not (runs / "figures").exists()


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_late_precision_refuses_fewer_than_one_epoch_before_any_work(tiny_runs, tmp_path, epochs, run_script):
    out = tmp_path / "late"
    assert_refused(run_script("late_precision", "continue", tiny_runs / "cerebral_lstm" / "seed0", "--out", out,
                              "--epochs", epochs),
                   f"--epochs must be at least 1, got {epochs}")
    assert not out.exists()


def test_late_precision_names_a_run_without_its_checkpoint(tmp_path, run_script):
    missing = tmp_path / "missing"
    missing.mkdir()
    assert_refused(run_script("late_precision", "evaluate", missing), f"{missing / 'checkpoint.pt'} does not exist")


def test_late_precision_refuses_outputs_it_could_not_write_before_any_work(tiny_runs, tmp_path, run_script):
    taken = tmp_path / "taken"
    taken.write_text("")
    run = tiny_runs / "cerebral_lstm" / "seed0"
    for command in (["continue", run, "--epochs", "1"], ["evaluate", run]):
        assert_refused(run_script("late_precision", *command, "--out", taken), f"{taken} is a file",
                       "choose another --out")
    out = tmp_path / "late"
    (out / "LATE.md").mkdir(parents=True)
    assert_refused(run_script("late_precision", "continue", run, "--epochs", "1", "--out", out),
                   f"cannot write {out / 'LATE.md'}: {out / 'LATE.md'} is a folder")
    (out / "LATE.md").rmdir()
    (out / "bf16").write_text("")  # the second continuation's folder: refused before the first trains
    assert_refused(run_script("late_precision", "continue", run, "--epochs", "1", "--out", out),
                   f"{out / 'bf16'} is a file")
    assert taken.read_text() == "" and sorted(p.name for p in out.iterdir()) == ["bf16"]


def assert_every_loader_refuses(run, tmp_path, run_script, message):
    """Every command that loads a trained run refuses `run` in one line with `message`, writing nothing."""
    late = tmp_path / "late"
    for command in (("late_precision", "evaluate", run, "--out", late),
                    ("late_precision", "continue", run, "--epochs", "1", "--out", late),
                    (generate, run), (export, run, tmp_path / "model.onnx")):
        assert_refused(run_script(*command), message, "restore it from git")
    assert not late.exists() and not (tmp_path / "model.onnx").exists()


def test_a_run_without_its_config_is_named_by_every_command_that_loads_it(runs, tmp_path, run_script):
    run = runs / "cerebral_lstm" / "seed0"
    (run / "config.yaml").unlink()
    assert_every_loader_refuses(run, tmp_path, run_script, f"{run / 'config.yaml'} does not exist")


def test_a_classifier_run_is_refused_by_the_character_model_commands(tmp_path, run_script, capsys):
    run = tmp_path / "digits"
    train(compose("task=digits", "model.state_size=8", "train.epochs=1", "device=cpu", f"out_dir={run}"))
    capsys.readouterr()  # the training's own output
    for command in (("late_precision", "evaluate", run), (generate, run), (export, run, tmp_path / "model.onnx")):
        assert_refused(run_script(*command), f"{run} is a task=digits classifier")


@pytest.mark.parametrize("steps", ["0", "101"])
def test_the_fingerprint_refuses_a_step_count_outside_one_epoch(steps):
    # a subprocess with a timeout (its main reads sys.argv): a count let through trains at paper size
    result = subprocess.run([sys.executable, ROOT / "scripts" / "fingerprint.py", "--steps", steps],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert_refused(result, f"--steps must be from 1 to 100 (one epoch), got {steps}")


def test_a_checkpoint_file_given_for_its_run_folder_is_named(tiny_runs, run_script):
    checkpoint = tiny_runs / "cerebral_lstm" / "seed0" / "checkpoint.pt"
    assert_refused(run_script(generate, checkpoint), f"{checkpoint} is a file: give the run's folder",
                   f"e.g. {checkpoint.parent}")


def test_a_run_folder_that_does_not_exist_is_named(tmp_path, run_script):
    for module, args in ((generate, ()), (export, (tmp_path / "model.onnx",)), (evaluate, ())):
        assert_refused(run_script(module, tmp_path / "typo", *args), f"{tmp_path / 'typo'} does not exist: give the "
                       "folder of a trained run")


def test_export_refuses_an_output_it_could_not_write_before_exporting(tiny_runs, tmp_path, run_script):
    run, taken = tiny_runs / "cerebral_lstm" / "seed0", tmp_path / "taken"
    taken.write_text("")
    assert_refused(run_script(export, run, tmp_path), f"cannot write {tmp_path}: {tmp_path} is a folder")
    assert_refused(run_script(export, run, taken / "model.onnx"), f"{taken} is a file")
    assert taken.read_text() == ""


def test_fidelity_refuses_folders_without_a_model_in_common(tiny_runs, tmp_path, data_dir, run_script):
    for model in ("cerebral_lstm", "single_lstm"):
        shutil.copytree(tiny_runs / model, tmp_path / model / model)
    assert_refused(run_script("fidelity", "--runs", tmp_path / "cerebral_lstm", "--reference",
                              tmp_path / "single_lstm", "--data", data_dir),
                   "no model has runs in both", "(cerebral_lstm)", "(single_lstm)")
    assert not (tmp_path / "cerebral_lstm" / "FIDELITY.md").exists()


@pytest.mark.parametrize("bound", ["0", "-1", "inf", "nan"])
def test_fidelity_refuses_a_bound_that_is_not_a_positive_finite_number(bound, tiny_runs, tmp_path, data_dir, run_script):
    assert_refused(run_script("fidelity", "--runs", tiny_runs, "--reference", tiny_runs, "--data", data_dir,
                              "--out", tmp_path / "F.md", f"--bound={bound}"),
                   f"--bound must be a positive finite number, got {float(bound)}")
    assert not (tmp_path / "F.md").exists()


@pytest.mark.parametrize("override,problem", [
    ("task=digits", "reproduce trains the paper's character models; task=digits runs with make task TASK=digits"),
    ("model=single_lstm", "the three runs would share out_dir="),
    ("out_dir={runs}/one", "the three runs would share out_dir="),
])
def test_reproduce_refuses_a_plan_it_cannot_carry_out_before_any_run_trains(override, problem, data_dir, tmp_path,
                                                                            run_script):
    runs = tmp_path / "runs"
    assert_refused(run_script("reproduce", "debug=tiny", f"data.dir={data_dir}", f"runs_dir={runs}",
                              "train.epochs=1", override.format(runs=runs)), problem)
    assert not runs.exists()


@pytest.mark.parametrize("args,problem", [
    (["--size", "0"], "--repeats, --size and --batch must be at least 1, got 21, 0 and 128"),
    (["--repeats", "0", "--batch", "0"], "--repeats, --size and --batch must be at least 1, got 0, 8 and 0"),
    (["--out", "{tmp}"], "cannot write {tmp}: {tmp} is a folder"),
    (["--modes-only", "--out", "{tmp}/bench.json"], "{tmp}/bench.json cannot be read as a benchmark result"),
])
def test_the_benchmark_refuses_arguments_it_cannot_run_with_before_timing(args, problem, tmp_path, run_script):
    (tmp_path / "bench.json").write_text("{ cut short")
    assert_refused(run_script("bench", "--size", "8", *(a.format(tmp=tmp_path) for a in args)),
                   problem.format(tmp=tmp_path))
    assert (tmp_path / "bench.json").read_text() == "{ cut short"


def test_the_benchmark_refuses_cuda_without_a_cuda_device(run_script):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has CUDA")
    assert_refused(run_script("bench", "--device", "cuda", "--size", "8"), "PyTorch sees no CUDA device here")


@pytest.fixture
def sweep(tmp_path):
    """A validation sweep of one committed MNIST-1D run (data.validation=true): SWEEP/lr0.001/cerebral_lstm/seed0."""
    source = ROOT / "results" / "tasks" / "validation" / "mnist1d" / "lr0.001" / "cerebral_lstm" / "seed0"
    run = tmp_path / "sweep" / "lr0.001" / "cerebral_lstm" / "seed0"
    run.mkdir(parents=True)
    for name in ("config.yaml", "loss.txt", "metrics.csv", "run.json"):
        shutil.copy(source / name, run)
    return tmp_path / "sweep"


@pytest.mark.parametrize("epochs", ["0,1", "-1", "1,,2", "10,x", ""])
def test_compare_refuses_validation_epochs_that_are_not_positive_counts(epochs, sweep, run_script):
    assert_refused(run_script("compare", "--runs", sweep, f"--validation={epochs}"),
                   "--validation must be comma-separated positive epoch counts, e.g. 10,20,30")
    assert not (sweep / "VALIDATION.md").exists()
    assert load_script("compare").epoch_counts("10,20,10") == [10, 20]


def test_compare_validation_writes_into_out(sweep, tmp_path, capsys, run_script):
    out = tmp_path / "elsewhere" / "validation"
    load_script("compare").main(["--runs", str(sweep), "--validation", "10,20", "--out", str(out)])
    assert not (sweep / "VALIDATION.md").exists()
    assert f"--runs {sweep} --validation 10,20 --out {out}`" in (out / "VALIDATION.md").read_text()
    assert capsys.readouterr().out.endswith(f"{out / 'VALIDATION.md'}\n")
    elsewhere = tmp_path / "no-sweep"
    assert_refused(run_script("compare", "--runs", tmp_path / "nothing", "--validation", "10", "--out", elsewhere),
                   "no validation runs under")
    assert not elsewhere.exists()  # no output folder for a report that was not written


@pytest.mark.parametrize("script", ["compare", "plot"])
def test_validation_runs_are_pointed_to_their_sweep(script, sweep, data_dir, run_script):
    lr_folder = sweep / "lr0.001"
    assert_refused(run_script(script, "--runs", lr_folder, "--data", data_dir),
                   f"{lr_folder} holds validation runs", f"--runs {sweep} --validation")
    assert_refused(run_script(script, "--runs", sweep, "--data", data_dir),
                   f"no runs found under {sweep}, but a validation sweep", f"--runs {sweep} --validation EPOCHS")
    assert not (lr_folder / "REPORT.md").exists() and not (lr_folder / "figures").exists()


def invalid_json(run):
    (run / "sample.json").write_text("{ cut short")
    return run / "sample.json", "cannot be read as a generated sample"


def sample_without_prime(run):
    (run / "sample.json").write_text(json.dumps({"temperature": 1.0, "seed": 0, "text": "Moe_Szyslak: hi"}))
    return run / "sample.json", "cannot be read as a generated sample"


def seconds_not_a_number(run):
    header, first, *rest = (run / "metrics.csv").read_text().splitlines()
    cells = first.split(",")
    cells[header.split(",").index("seconds")] = "abc"
    (run / "metrics.csv").write_text("\n".join([header, ",".join(cells), *rest]) + "\n")
    return run / "metrics.csv", "cannot be read as the run's metrics (could not convert string to float: 'abc')"


def config_without_model(run):
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["model"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run / "config.yaml", "is invalid: model.core"


@pytest.mark.parametrize("script", ["compare", "plot"])
@pytest.mark.parametrize("spoil", [invalid_json, sample_without_prime, seconds_not_a_number, config_without_model])
def test_a_damaged_run_file_is_named_with_its_fix(script, spoil, runs, data_dir, run_script):
    run = runs / "cerebral_lstm" / "seed0"
    path, problem = spoil(run)
    assert_refused(run_script(script, "--runs", runs, "--data", data_dir), f"{path} {problem}", "restore it from git")
    assert not (runs / "REPORT.md").exists() and not (runs / "figures").exists()


@pytest.mark.parametrize("script", ["compare", "plot"])
def test_a_classifier_run_without_its_metrics_is_named(script, tmp_path, data_dir, run_script, capsys):
    runs = tmp_path / "runs"
    run = runs / "cerebral_lstm" / "seed0"
    train(compose("task=digits", "model.state_size=8", "train.epochs=1", "device=cpu", f"out_dir={run}"))
    capsys.readouterr()  # the training's own output
    (run / "metrics.csv").unlink()
    assert_refused(run_script(script, "--runs", runs, "--data", data_dir),
                   f"{run / 'metrics.csv'} has no test accuracy and loss per epoch", "restore it from git")
    assert not (runs / "REPORT.md").exists() and not (runs / "figures").exists()


def test_generate_names_a_run_inside_a_folder_of_runs(tiny_runs, run_script):
    assert_refused(run_script(generate, tiny_runs), f"{tiny_runs} holds runs, not one run",
                   f"e.g. {tiny_runs / 'cerebral_lstm' / 'seed0'}")


@pytest.mark.parametrize("spoil,problem", [
    (lambda config: {"seed": 0}, "model.core: Missing key core"),
    (lambda config: {**config, "model": {**config["model"], "core": "foo"}},
     "model.core must be lstm or cerebral or cerebral_printed or novo, got 'foo'"),
], ids=["only_a_seed", "an_unknown_core"])
def test_an_invalid_saved_config_is_named_by_every_command_that_loads_it(spoil, problem, runs, tmp_path, run_script):
    run = runs / "cerebral_lstm" / "seed0"
    (run / "config.yaml").write_text(yaml.safe_dump(spoil(yaml.safe_load((run / "config.yaml").read_text()))))
    assert_every_loader_refuses(run, tmp_path, run_script, f"{run / 'config.yaml'} is invalid: {problem}")


def test_build_core_refuses_an_unknown_core():
    with pytest.raises(ConfigError, match="model.core must be lstm or cerebral or cerebral_printed or novo, got 'foo'"):
        build_core(OmegaConf.merge(compose().model, {"core": "foo"}), 4)
