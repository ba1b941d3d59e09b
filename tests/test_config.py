import subprocess
import sys

import pytest
from conftest import ROOT, tiny_overrides

from cerebral.config import ConfigError, check_config, compose, config_differences

MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
TRAINS = sorted(p.stem for p in (ROOT / "conf" / "train").glob("*.yaml"))


def test_the_default_composition_is_the_paper_protocol():
    cfg = compose()
    assert cfg.model.name == "cerebral_lstm" and cfg.model.state_size == 512
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.initial_accumulator_value) == ("adagrad", 0.05, 0.1)
    assert (cfg.train.epochs, cfg.train.steps_per_epoch, cfg.train.batch_size) == (500, 100, 128)
    assert cfg.data.seq_len == 20 and cfg.model.init == "tf_xavier" and cfg.seed == 0
    assert cfg.out_dir == "results/runs/cerebral_lstm/seed0"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("train", TRAINS)
def test_every_config_composes_and_checks(model, train):
    cfg = compose(f"model={model}", f"train={train}")
    check_config(cfg)
    assert cfg.model.name == model


def test_keys_users_rely_on_are_overridable():
    cfg = compose("model=single_lstm", "model.state_size=64", "train.epochs=3",
                         "train.steps_per_epoch=7", "train.batch_size=9", "optim.lr=0.1", "seed=4",
                         "device=cpu", "out_dir=/tmp/x")
    assert (cfg.model.state_size, cfg.train.epochs, cfg.train.steps_per_epoch, cfg.train.batch_size,
            cfg.optim.lr, cfg.seed, cfg.device, cfg.out_dir) == (64, 3, 7, 9, 0.1, 4, "cpu", "/tmp/x")
    assert compose("seed=3").out_dir == "results/runs/cerebral_lstm/seed3"


def test_unknown_model_is_refused_with_the_available_ones():
    with pytest.raises(ConfigError) as error:
        compose("model=transformer")
    assert str(error.value) == ("model=transformer is not an option of model: use one of " + ", ".join(MODELS)
                                + f" (e.g. model={MODELS[0]})")


@pytest.mark.parametrize("override,problem", [
    ("train=fast", "train=fast is not an option of train: use one of pass, paper"),
    ("train.batchsize=64", "train.batchsize is not a key of this config: check its spelling"),
    ("+train.batchsize=64", "+train.batchsize=64 adds a key the config does not have"),
    ("+data.padding=packed", "+data.padding=packed adds a key"),  # an imdb key, absent from charlm
    ("++model.stat_size=16", "++model.stat_size=16 would add its key if the config did not have it"),
    ("++seed=1", "drop the '++' (key=value sets any key there is"),
    ("notanoverride", "Error parsing override 'notanoverride' (overrides are key=value"),
    ("optim.lr=[1", "no viable alternative at input '[1' (overrides are key=value"),
    ("data.dir=~/data", "data.dir=~/data: Hydra cannot read an unquoted '~'; write data.dir=$HOME/data"),
])
def test_an_override_hydra_cannot_apply_is_refused_in_one_line(override, problem):
    with pytest.raises(ConfigError) as error:
        compose(override)
    message = str(error.value)
    assert "\n" not in message and problem.replace("pass, paper", "paper, pass") in message


@pytest.mark.parametrize("override,key", [
    ("optim.lr=-0.05", "optim.lr"), ("optim.lr=0", "optim.lr"),
    ("train.batch_size=0", "train.batch_size"), ("model.state_size=abc", "model.state_size"),
    ("model.state_size=1.5", "model.state_size"), ("model.state_size=-3", "model.state_size"),
    ("model.core=gru", "model.core"), ("train.epochs=0", "train.epochs"),
    ("device=tpu", "device"), ("model.init=he", "model.init"), ("model.dropout=1.5", "model.dropout"),
    ("train.steps_per_epoch=0", "train.steps_per_epoch"), ("train.steps_per_epoch=1.5", "train.steps_per_epoch"),
    ("model.post_bias=true", "model.post_bias"),
    ("optim.lr=inf", "optim.lr"), ("optim.initial_accumulator_value=inf", "optim.initial_accumulator_value"),
    ("model.dropout=-inf", "model.dropout"),
])
def test_invalid_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"{key} must be"):
        check_config(compose(override))


@pytest.mark.parametrize("steps,refused", [("0", True), ("1.5", True), ("3", False), ("null", False)])
def test_a_shuffled_pass_takes_null_or_a_positive_cap_on_its_steps(steps, refused):
    cfg = compose("train=pass", f"train.steps_per_epoch={steps}")
    if refused:
        with pytest.raises(ConfigError, match="train.steps_per_epoch must be null .the whole pass. or a positive"):
            check_config(cfg)
    else:
        check_config(cfg)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as error:
        check_config(compose("optim.lr=-1", "train.batch_size=0"))
    assert "optim.lr" in str(error.value) and "train.batch_size" in str(error.value)


def test_the_command_line_refuses_bad_values_before_any_work(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cerebral.train", "optim.lr=-1",
                             f"out_dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    assert "optim.lr must be a positive number, got -1" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,problem", [
    (["model=transformer"], "error: model=transformer is not an option of model: use one of "),
    (["train.batchsize=64"], "error: train.batchsize is not a key of this config"),
    (["-m", "+train.batchsize=64,32"], "error: +train.batchsize=64,32 adds a key the config does not have"),
    (["seed=0,1", "+train.batchsize=64"], "error: +train.batchsize=64 adds a key the config does not have"),
    (["notanoverride"], "error: Error parsing override 'notanoverride' (overrides are key=value"),
    (["-m", "data.mnist_dir=~/mnist"], "error: data.mnist_dir=~/mnist: Hydra cannot read an unquoted '~'"),
    (["-m", "seed=0,1", "model.state_sise=16"], "error: model.state_sise is not a key of this config"),
    (["seed=range(0,2)", "model=bogus,single_lstm"], "error: model=bogus is not an option of model"),
    (["-m", "experiment=nonexistent"], "error: experiment=nonexistent is not an option of experiment"),
    (["seed=${sed}"], "error: seed: Interpolation key 'sed' not found; fix the ${...} reference of seed"),
])
def test_the_command_line_refuses_an_override_in_one_line_before_any_work(args, problem, data_dir, tmp_path):
    tiny = tiny_overrides(data_dir, tmp_path / "run")  # were the check to let it through: seconds of training
    result = subprocess.run([sys.executable, "-m", "cerebral.train", *args, *tiny],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(problem) and result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_sweep_with_a_bad_value_is_refused_before_hydra_makes_its_folders(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "cerebral.train", "-m", "seed=0,1", "optim.lr=-1",
                             *tiny_overrides(data_dir, tmp_path / "run"), f"hydra.sweep.dir={sweep}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr == "error: invalid configuration:\n  optim.lr must be a positive number, got -1 (e.g. optim.lr=0.05)\n"
    assert not sweep.exists() and not (tmp_path / "run").exists()


def test_config_differences_name_the_changed_keys():
    saved = {"train": {"epochs": 5, "batch_size": 128}, "optim": {"lr": 0.05}}
    new = {"train": {"epochs": 9, "batch_size": 64}, "optim": {"lr": 0.05}, "extra": 1}
    assert config_differences(saved, new) == ["extra: '<absent>' -> 1", "train.batch_size: 128 -> 64"]
