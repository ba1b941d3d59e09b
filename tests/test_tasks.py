"""Sequence classification through the one training loop: every core on digits, and MNIST and
IMDB from files the tests make (downloading them: tests/test_taskdata.py); the report and figures
of a task's runs."""

import csv
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, tiny_overrides
from omegaconf import OmegaConf
from sklearn.datasets import load_digits
from test_seqdata import imdb_csv, write_mnist  # noqa: F401 (imdb_csv is a fixture)

from cerebral import seqdata
from cerebral.config import ConfigError, compose
from cerebral.curves import find_runs
from cerebral.data import DataError
from cerebral.tasks import SequenceClassifier, make_task
from cerebral.train import train

CORES = ["single_lstm", "stacked_lstm", "cerebral_lstm", "novo_lstm"]


def tiny(out_dir, *extra):
    return [f"out_dir={out_dir}", "model.state_size=8", "train.epochs=2", "device=cpu", *extra]


def metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("model", CORES)
def test_every_core_learns_digits_read_row_by_row(model, tmp_path):
    run = tmp_path / "run"
    overrides = tiny(run, "train.epochs=6", "train.batch_size=128", "optim.lr=0.02")
    losses = train(compose("task=digits", f"model={model}", *overrides))
    rows = metrics(run)
    assert [float(r["train_loss"]) for r in rows] == losses
    assert losses[-1] < losses[0] < 2.5  # from about ln(10) = 2.30 downwards
    accuracy = [float(r["test_accuracy"]) for r in rows]
    assert all(0.0 <= a <= 1.0 for a in accuracy) and accuracy[-1] > 0.2  # chance is 0.1
    assert float(rows[-1]["test_loss"]) > 0 and 0 <= float(rows[-1]["train_accuracy"]) <= 1
    record = json.loads((run / "run.json").read_text())
    assert record["parameters"] == sum(p.numel() for p in make_task(compose(
        "task=digits", f"model={model}", "model.state_size=8")).model.parameters())


def test_the_classifier_reads_the_last_hidden_state():
    torch.manual_seed(0)
    model = SequenceClassifier(torch.nn.LSTM(3, 4, batch_first=True), num_classes=2)
    x = torch.randn(5, 6, 3)
    output, _ = model.core(x)
    torch.testing.assert_close(model(x), model.head(output[:, -1]))
    changed = x.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(model(changed), model(x))  # the last step matters


def test_a_classification_run_resumes_bit_for_bit_learning_rate_schedule_included(tmp_path):
    decay = "optim.lr_decay_every=1"
    straight = train(compose("task=digits", *tiny(tmp_path / "a", "train.epochs=3", decay)))
    train(compose("task=digits", *tiny(tmp_path / "b", "train.epochs=1", decay)))
    resumed = train(compose("task=digits", *tiny(tmp_path / "b", "train.epochs=3", decay)))
    assert resumed == straight
    assert metrics(tmp_path / "a")[-1]["test_accuracy"] == metrics(tmp_path / "b")[-1]["test_accuracy"]
    sessions = json.loads((tmp_path / "b" / "run.json").read_text())["sessions"]
    digits = load_digits()
    digest = seqdata.array_sha256(digits.images, digits.target)
    assert [s["data_sha256"] for s in sessions] == [{"sklearn.datasets.load_digits": digest}] * 2  # each session's data


def test_mnist_from_idx_files_with_the_tutorial_preset(tmp_path):
    write_mnist(tmp_path / "mnist", n_train=40, n_test=10, rows=5, cols=4)
    cfg = compose("task=mnist", f"data.mnist_dir={tmp_path / 'mnist'}", *tiny(tmp_path / "run", "train.batch_size=10"))
    assert cfg.optim.name == "adam" and cfg.optim.lr == 0.01 and cfg.train.epochs == 2
    train(cfg)
    rows = metrics(tmp_path / "run")
    assert len(rows) == 2 and rows[0]["test_accuracy"] != ""
    assert float(rows[0]["chars_per_second"]) > 0


def test_mnist_without_its_files_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="data.mnist_dir must be null .* or the folder"):
        train(compose("task=mnist", "data.mnist_dir=''", *tiny(tmp_path / "run")))
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        train(compose("task=mnist", f"data.mnist_dir={tmp_path}", *tiny(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_imdb_from_a_csv_batched_with_the_learning_rate_cut_every_two_epochs(imdb_csv, tmp_path):  # noqa: F811
    cfg = compose("task=imdb", f"data.imdb_csv={imdb_csv}", "data.num_reviews=20", "data.seq_len=6",
                  *tiny(tmp_path / "run", "train.batch_size=5", "train.epochs=3", "task.embedding_size=4"))
    assert cfg.optim.lr_decay_every == 2 and cfg.optim.lr_decay_factor == 0.1
    train(cfg)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.001 * 0.1)  # cut once after 2 epochs
    assert len(metrics(tmp_path / "run")) == 3
    assert state["model"]["embedding.weight"].shape == (1001, 4)
    assert not state["model"]["embedding.weight"][0].any()  # padding stays a zero input under tf_xavier


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("core", ["cerebral_lstm", "single_lstm"])
def test_packed_reviews_reach_the_core_at_their_own_length_without_padding(core, bidirectional):
    """Each left-padded review classified as if it ran alone, unpadded; a review without known
    words reads as the zero state. Left padding (the notebook's) feeds the padding to the core."""
    from cerebral.models import build_core

    torch.manual_seed(0)
    cfg = compose(f"model={core}", "model.state_size=6", f"model.bidirectional={bidirectional}", "model.gate_bias=true",
                  "model.init=torch").model  # with gate biases, padding steps move the state
    packed = SequenceClassifier(build_core(cfg, 4), num_classes=2, vocab_size=9, packed=True).eval()
    left = SequenceClassifier(packed.core, num_classes=2, vocab_size=9).eval()
    left.load_state_dict(packed.state_dict())
    reviews = [[3, 1, 4, 1, 5], [2, 6], [8], []]
    tokens = torch.tensor([[0] * (5 - len(r)) + r for r in reviews])
    logits = packed(tokens)
    hidden = 6 * (2 if bidirectional else 1)
    for row, review in enumerate(reviews):
        if not review:
            torch.testing.assert_close(logits[row], packed.head(torch.zeros(hidden)))
            continue
        alone = left(torch.tensor([review]))  # no padding: left and packed read the same state
        torch.testing.assert_close(logits[row], alone[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(left(tokens)[1], logits[1])  # with left padding, the padding reached the core


@pytest.mark.parametrize("packed", [False, True])
def test_the_classifier_reads_projected_bidirectional_cores(packed):
    from cerebral import CerebralLSTM

    core = CerebralLSTM(4, 6, bidirectional=True, proj_size=3, batch_first=True)
    model = SequenceClassifier(core, num_classes=2, vocab_size=9, packed=packed)
    assert model.head.in_features == 2 * 3
    assert model(torch.tensor([[0, 2, 3], [1, 2, 3]])).shape == (2, 2)


def test_imdb_trains_with_packed_reviews_and_refuses_an_unknown_padding(imdb_csv, tmp_path):  # noqa: F811
    overrides = [f"data.imdb_csv={imdb_csv}", "data.num_reviews=20", "data.seq_len=6", "task.embedding_size=4"]
    cfg = compose("task=imdb", "data.padding=packed", *overrides, *tiny(tmp_path / "run", "train.batch_size=5"))
    assert compose("task=imdb").data.padding == "left"
    assert make_task(cfg).model.packed and not make_task(compose("task=imdb", *overrides)).model.packed
    losses = train(cfg)
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    with pytest.raises(ConfigError, match="data.padding must be left .* or packed"):
        train(compose("task=imdb", "data.padding=right", *overrides, *tiny(tmp_path / "other")))


def test_an_imdb_run_saved_before_data_padding_existed_resumes(imdb_csv, tmp_path):  # noqa: F811
    overrides = [f"data.imdb_csv={imdb_csv}", "data.num_reviews=20", "data.seq_len=6", "task.embedding_size=4"]
    run = tmp_path / "run"
    train(compose("task=imdb", *overrides, *tiny(run, "train.epochs=1", "train.batch_size=5")))
    saved = OmegaConf.load(run / "config.yaml")
    del saved.data["padding"]
    OmegaConf.save(saved, run / "config.yaml")
    assert len(train(compose("task=imdb", *overrides, *tiny(run, "train.batch_size=5")))) == 2


def test_imdb_with_a_bad_csv_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,positive\n")
    with pytest.raises(DataError, match="review"):
        train(compose("task=imdb", f"data.imdb_csv={bad}", *tiny(tmp_path / "run")))


def test_a_task_report_compares_test_accuracy_per_core_and_seed(data_dir, tmp_path):
    runs = tmp_path / "digits"
    for model in ("single_lstm", "cerebral_lstm"):
        for seed in (0, 1):
            train(compose("task=digits", f"model={model}", f"seed={seed}", f"runs_dir={runs}", "model.state_size=8",
                          "train.epochs=1", "device=cpu"))
    assert sorted(find_runs(runs)) == ["cerebral_lstm", "single_lstm"]
    for script in ("plot.py", "compare.py"):
        done = subprocess.run([sys.executable, f"scripts/{script}", "--runs", str(runs), "--data", str(data_dir)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    report = (runs / "REPORT.md").read_text()
    assert "task=digits" in report and report.count("| cerebral_lstm | ") == 3  # summary + two seeds
    data = json.loads((runs / "report.json").read_text())
    assert [r["seed"] for r in data["accuracy"]["single_lstm"]] == [0, 1]
    assert data["parameters"]["cerebral_lstm"] > data["parameters"]["single_lstm"]
    assert (runs / "figures" / "test_accuracy.png").exists()


def test_the_character_task_is_unchanged_by_default():
    cfg = compose()
    assert cfg.task.name == "charlm" and cfg.optim.name == "adagrad" and cfg.train.epochs == 500
    assert cfg.out_dir == "results/runs/cerebral_lstm/seed0"


def test_the_language_model_refuses_a_bidirectional_core_in_one_line(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="model.bidirectional must be false for task=charlm"):
        train(compose(*tiny_overrides(data_dir, tmp_path / "run", "model.bidirectional=true")))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", ["single_lstm", "stacked_lstm", "cerebral_lstm"])
def test_a_classifier_reads_both_directions_of_a_bidirectional_core(model, tmp_path):
    cfg = compose("task=digits", f"model={model}", "model.bidirectional=true", "model.state_size=8",
                  "train.epochs=1", "device=cpu", f"out_dir={tmp_path / 'run'}")
    task = make_task(cfg)
    assert task.model.core.bidirectional and task.model.head.in_features == 16
    x = task.inputs[:3]
    output, _ = task.model.core(x)
    expected = task.model.head(torch.cat([output[:, -1, :8], output[:, 0, 8:]], dim=-1))
    torch.testing.assert_close(task.model(x), expected)
    assert len(train(cfg)) == 1
