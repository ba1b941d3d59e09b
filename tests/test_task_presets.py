"""The two benchmark presets, task=mnist1d and task=japanese_vowels: their data (the generated
MNIST-1D arrays' digest, Japanese Vowels' utterances each read at its own length), the sizes the
presets set (the parameter-matched single LSTM, lstmp at the task's state size), the validation
split, the reference block, and the one-line refusal when the tasks extra is missing."""

import random
import re
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from test_taskdata import pin
from test_tsfile import FIXTURE

from cerebral import seqdata, taskdata
from cerebral.config import ConfigError, check_command_line, compose
from cerebral.models import build_core, parameter_count
from cerebral.tasks import SequenceClassifier, make_task
from cerebral.train import train

TASKS = ["mnist1d", "japanese_vowels"]
# The SHA-256 of the arrays mnist1d 0.0.2.post1 generates with its default arguments, as observed
# on x86_64 (numpy 2.4.6, scipy 1.17.1): a change in the package's data shows here.
MNIST1D_SHA256 = "221f6a5ff65fb178941f4d795fc31d407305d64f4c06190dd93ea1756a476e8e"


@pytest.fixture
def fixture_vowels(monkeypatch):
    """task=japanese_vowels reads the .ts fixture (9 utterances each of train and test), pinned."""
    monkeypatch.setenv(taskdata.MIRROR_VAR, str(FIXTURE))
    pin(monkeypatch, "japanese_vowels", FIXTURE)


def preset(task, tmp_path, *overrides):
    return compose(f"task={task}", f"data.dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'run'}", "device=cpu",
                   *overrides)


def test_the_generated_mnist1d_arrays_keep_their_digest_and_leave_the_global_random_state_alone():
    random.seed(7)
    np.random.seed(7)
    expected = random.random(), np.random.rand()
    random.seed(7)
    np.random.seed(7)
    data = seqdata.load_mnist1d()
    assert (random.random(), np.random.rand()) == expected  # the generator's reseeding was undone
    assert data.digests == {"mnist1d.data.make_dataset": MNIST1D_SHA256}
    assert data.train_x.shape == (4000, 40, 1) and data.test_x.shape == (1000, 40, 1)
    assert data.train_x.dtype == torch.float32 and data.num_classes == 10
    assert torch.bincount(torch.cat([data.train_y, data.test_y])).tolist() == [500] * 10


def test_a_missing_tasks_extra_is_refused_in_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # import mnist1d now fails, as without the package
    with pytest.raises(ConfigError) as error:
        check_command_line(["task=mnist1d"])  # what `python -m cerebral.train` runs before Hydra does
    message = str(error.value)
    assert message.startswith("task=mnist1d needs the mnist1d package of the tasks extra")
    assert "pip install -e '.[tasks]'" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[tasks\]'"):
        train(preset("mnist1d", tmp_path))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("core", ["cerebral_lstm", "single_lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_each_utterance_ends_at_its_own_length(core, bidirectional):
    """The utterances of 7 and 29 steps, padded to 26 and 29 in their tensors, give the classifier
    the final states the core reaches on each one alone, unpadded."""
    data = seqdata.load_japanese_vowels(FIXTURE)
    x = data.train_x[:2]
    lengths = (~x[..., 0].isnan()).sum(1)
    assert lengths.tolist() == [7, 29] and x.shape[1] == 29
    torch.manual_seed(0)
    cfg = compose(f"model={core}", "model.state_size=6", f"model.bidirectional={bidirectional}", "model.gate_bias=true",
                  "model.init=torch").model
    model = SequenceClassifier(build_core(cfg, 12), data.num_classes, packed=True).eval()
    features = model._final_states(x)
    for row, length in enumerate(lengths.tolist()):
        alone = x[row, x.shape[1] - length:].unsqueeze(0)  # the utterance, without its padding
        assert not alone.isnan().any()
        output, (h, *_) = model.core(alone)
        torch.testing.assert_close(features[row], torch.cat(list(h[-model.directions:]), dim=-1)[0])
        if not bidirectional:
            torch.testing.assert_close(features[row], output[0, -1])
    torch.testing.assert_close(model(x), model.head(features))


@pytest.mark.parametrize("task", TASKS)
def test_the_matched_single_lstm_has_the_cerebral_models_parameter_count(task, tmp_path, fixture_vowels):
    counts = {model: parameter_count(make_task(preset(task, tmp_path, f"model={model}")).model)
              for model in ("cerebral_lstm", "single_lstm", "single_lstm_matched")}
    assert compose(f"task={task}", "model=single_lstm_matched").model.state_size > 128
    assert abs(counts["single_lstm_matched"] - counts["cerebral_lstm"]) <= 0.01 * counts["cerebral_lstm"]
    assert counts["single_lstm"] < 0.6 * counts["cerebral_lstm"]  # the plain single LSTM is not matched


@pytest.mark.parametrize("task", TASKS)
def test_lstmp_runs_at_the_tasks_state_size(task, tmp_path, fixture_vowels):
    model = make_task(preset(task, tmp_path, "model=lstmp")).model
    assert model.core.hidden_size == 256 and model.core.proj_size == 128 and model.head.in_features == 128
    assert make_task(preset(task, tmp_path, "model=cerebral_lstm")).model.core.hidden_size == 128


def test_validation_holds_out_a_stratified_tenth_of_the_training_set_in_place_of_the_test_set(tmp_path):
    held_out = make_task(preset("mnist1d", tmp_path, "data.validation=true", "model.state_size=4"))
    plain = make_task(preset("mnist1d", tmp_path, "model.state_size=4"))
    assert len(held_out.inputs) == 3600 and len(held_out.held_inputs) == 400
    assert (torch.bincount(held_out.held_targets, minlength=10) - 40).abs().max() <= 1  # stratified: 10% of each class
    assert held_out.columns == ("train_accuracy", "val_loss", "val_accuracy")
    assert plain.columns == ("train_accuracy", "test_loss", "test_accuracy") and len(plain.held_inputs) == 1000
    every_row = torch.cat([held_out.inputs, held_out.held_inputs]).flatten(1)
    assert torch.equal(every_row.unique(dim=0), plain.inputs.flatten(1).unique(dim=0))  # a split of the training set
    other_seed = make_task(preset("mnist1d", tmp_path, "data.validation=true", "model.state_size=4", "seed=1"))
    assert torch.equal(other_seed.held_inputs, held_out.held_inputs)  # fixed across training seeds


@pytest.mark.parametrize(("task", "batch", "held_out"), [("mnist1d", 400, "val"), ("japanese_vowels", 3, "test")])
def test_both_tasks_train_through_the_loop_and_name_their_data(task, batch, held_out, tmp_path, fixture_vowels):
    """MNIST-1D on its validation split; the 9 fixture utterances are too few to hold 10% out stratified."""
    cfg = preset(task, tmp_path, "model.state_size=4", "train.epochs=1", f"train.batch_size={batch}",
                 f"data.validation={held_out == 'val'}")
    assert len(train(cfg)) == 1
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert header.endswith(f"train_accuracy,{held_out}_loss,{held_out}_accuracy")
    digests = make_task(cfg).data_sha256
    assert digests == ({"mnist1d.data.make_dataset": MNIST1D_SHA256} if task == "mnist1d"
                       else taskdata.DOWNLOADS["japanese_vowels"].sha256)


@pytest.mark.parametrize("task", TASKS)
def test_the_reference_block_names_its_source(task):
    reference = compose(f"task={task}").task.reference
    assert reference.source and all(0 < accuracy <= 1 for accuracy in reference.test_accuracy.values())
    if task == "mnist1d":  # the mnist1d README's table
        assert dict(reference.test_accuracy) == {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94, "GRU": 0.91,
                                                 "human expert": 0.96}


def test_the_tasks_extra_pins_what_requirements_txt_pins():
    extra = re.findall(r'"([^"]+)"', re.search(r"^tasks = \[(.*)\]", (ROOT / "pyproject.toml").read_text(), re.M)[1])
    pins = set((ROOT / "requirements.txt").read_text().split())
    assert {"mnist1d", "requests"} == {pin.split("==")[0] for pin in extra} and set(extra) <= pins
