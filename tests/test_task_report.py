"""The classification report on hand-made runs: the task's published reference numbers in rows of
their own, marked as not ours, and the generated sentence on whether the Cerebral LSTM beats the
single LSTM of equal parameters, by the mean over seeds of the last epoch's test accuracy."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from cerebral import report
from cerebral.errors import ConfigError
from cerebral.report import write_report

ROOT = Path(__file__).resolve().parents[1]

REFERENCE = {"source": "A. Author, Some paper (2020), table 1", "test_accuracy": {"GRU": 0.91, "human expert": 0.965}}


def write_run(root, model, seed, accuracies, parameters, reference=None):
    """<root>/<model>/seed<seed>/ as training leaves it: loss.txt, metrics.csv with the test accuracy
    per epoch, config.yaml naming the task (and its reference block) and run.json."""
    path = root / model / f"seed{seed}"
    path.mkdir(parents=True)
    (path / "loss.txt").write_text("".join(f"[{i}] loss : {1.0 / (i + 1)}\n" for i in range(len(accuracies))))
    rows = [f"{i},{1.0 / (i + 1)},2.5,100.0,{a},{1 - a},{a}" for i, a in enumerate(accuracies)]
    (path / "metrics.csv").write_text(
        "\n".join(["epoch,train_loss,seconds,chars_per_second,train_accuracy,test_loss,test_accuracy", *rows]) + "\n")
    task = {"name": "toy", **({"reference": reference} if reference else {})}
    (path / "config.yaml").write_text(yaml.safe_dump({"task": task, "model": {"name": model}}))
    (path / "run.json").write_text(json.dumps({"sessions": [{"device": "CPU"}], "parameters": parameters}))


def runs(tmp_path, data_dir, cores, reference=None):
    """cores: {model: (parameters, [test accuracies per epoch, per seed])}; returns the report's text and data."""
    for model, (parameters, seeds) in cores.items():
        for seed, accuracies in enumerate(seeds):
            write_run(tmp_path, model, seed, accuracies, parameters, reference)
    write_report(tmp_path, tmp_path, data_dir)
    return (tmp_path / "REPORT.md").read_text(), json.loads((tmp_path / "report.json").read_text())


def test_published_reference_numbers_come_in_rows_of_their_own_marked_not_ours(tmp_path, data_dir):
    text, data = runs(tmp_path, data_dir, {"single_lstm": (100, [[0.5, 0.6], [0.5, 0.7]])}, REFERENCE)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert "| *published, not ours:* GRU | - | - | 91% | - |" in rows
    assert "| *published, not ours:* human expert | - | - | 96.5% | - |" in rows
    assert "| single_lstm | 100 | 2 | 65.00% (60.00%-70.00%) | 65.00% |" in rows  # ours, unchanged
    assert "test accuracies published in A. Author, Some paper (2020), table 1" in text
    assert data["reference"] == REFERENCE
    # the published rows follow our own, in the one table of accuracy per core
    assert rows.index("| *published, not ours:* GRU | - | - | 91% | - |") > rows.index(
        "| single_lstm | 100 | 2 | 65.00% (60.00%-70.00%) | 65.00% |")


def test_no_reference_block_no_published_rows(tmp_path, data_dir):
    text, data = runs(tmp_path, data_dir, {"single_lstm": (100, [[0.5, 0.6]])},
                      {"source": "nobody checked one yet", "test_accuracy": {}})
    assert "published" not in text and data["reference"] is None


def test_the_cerebral_lstm_beats_the_single_lstm_of_equal_parameters_outside_the_spread(tmp_path, data_dir):
    text, data = runs(tmp_path, data_dir, {"cerebral_lstm": (1000, [[0.5, 0.90], [0.5, 0.92], [0.5, 0.91]]),
                                 "single_lstm_matched": (1005, [[0.99, 0.85], [0.5, 0.86], [0.5, 0.87]])})
    sentence = ("The Cerebral LSTM beats the single LSTM of equal parameters (single_lstm_matched, 1,005 parameters "
                "against the Cerebral model's 1,000) on mean last-epoch test accuracy over 3 seeds each: 91.00% against "
                "86.00%, Cerebral's 5.00 points higher, outside the spread: the seeds' ranges do not overlap "
                "(90.00%-92.00% against 85.00%-87.00%).")
    assert sentence in text.splitlines()
    verdict = data["cerebral_vs_matched"]
    assert verdict["beats"] is True and verdict["within_spread"] is False and verdict["seeds"] == [3, 3]


def test_the_verdict_reads_the_last_epoch_and_says_within_the_spread(tmp_path, data_dir):
    """The matched single LSTM's best epochs lie below Cerebral's, its last epochs above: the last
    epoch decides, and ranges that overlap are within the spread."""
    text, data = runs(tmp_path, data_dir, {"cerebral_lstm": (1000, [[0.95, 0.88], [0.95, 0.90], [0.95, 0.92]]),
                                 "single_lstm_matched": (1005, [[0.5, 0.89], [0.5, 0.90], [0.5, 0.94]])})
    assert ("The Cerebral LSTM does not beat the single LSTM of equal parameters (single_lstm_matched, 1,005 "
            "parameters against the Cerebral model's 1,000) on mean last-epoch test accuracy over 3 seeds each: "
            "90.00% against 91.00%, Cerebral's 1.00 points lower, within the spread: the seeds' ranges overlap "
            "(88.00%-92.00% against 89.00%-94.00%).") in text.splitlines()
    assert data["cerebral_vs_matched"]["beats"] is False and data["cerebral_vs_matched"]["within_spread"] is True


def test_equal_means_do_not_beat(tmp_path, data_dir):
    """Equal sums of accuracies in another order still make equal means: no win by a rounding error."""
    text, data = runs(tmp_path, data_dir, {"cerebral_lstm": (1000, [[0.1], [0.1], [0.4]]),
                                           "single_lstm_matched": (1005, [[0.4], [0.1], [0.1]])})
    assert (0.1 + 0.1 + 0.4) / 3 > (0.4 + 0.1 + 0.1) / 3  # floating-point sums depend on the order
    assert ("on mean last-epoch test accuracy over 3 seeds each: 20.00% against 20.00%, the same mean, within "
            "the spread") in text
    assert "The Cerebral LSTM does not beat the single LSTM of equal parameters" in text
    assert data["cerebral_vs_matched"]["beats"] is False


def test_no_verdict_without_both_cores(tmp_path, data_dir):
    text, data = runs(tmp_path, data_dir, {"cerebral_lstm": (1000, [[0.5, 0.9]]), "single_lstm": (500, [[0.5, 0.8]])})
    assert "equal parameters" not in text and data["cerebral_vs_matched"] is None
    assert report.matched_verdict({"single_lstm_matched": [{"final": 0.5}]}, {}) is None


# --- the validation sweep that chooses the epochs and the learning rate ------------------------


def write_validation_run(root, lr, model, accuracies, validation=True):
    path = root / f"lr{lr}" / model / "seed0"
    path.mkdir(parents=True)
    (path / "loss.txt").write_text("".join(f"[{i}] loss : 1.0\n" for i in range(len(accuracies))))
    rows = [f"{i},1.0,2.5,100.0,0.9,1.0,{a}" for i, a in enumerate(accuracies)]
    (path / "metrics.csv").write_text(
        "\n".join(["epoch,train_loss,seconds,chars_per_second,train_accuracy,val_loss,val_accuracy", *rows]) + "\n")
    (path / "config.yaml").write_text(yaml.safe_dump({"task": {"name": "toy"}, "model": {"name": model},
                                                      "optim": {"lr": lr}, "data": {"validation": validation}}))
    (path / "run.json").write_text(json.dumps({"sessions": [{"command": f"train model={model} optim.lr={lr}"}]}))


def test_the_sweep_chooses_the_epochs_and_rate_of_the_best_mean_over_the_cores(tmp_path):
    # lr 0.01: single best alone at epoch 2, but the mean over the cores is best at 0.001 after 4 epochs
    write_validation_run(tmp_path, 0.01, "single_lstm", [0.5, 0.99, 0.5, 0.5])
    write_validation_run(tmp_path, 0.01, "cerebral_lstm", [0.5, 0.5, 0.5, 0.5])
    write_validation_run(tmp_path, 0.001, "single_lstm", [0.5, 0.6, 0.7, 0.8])
    write_validation_run(tmp_path, 0.001, "cerebral_lstm", [0.5, 0.6, 0.7, 0.9])
    write_validation_run(tmp_path, 0.001, "novo_lstm", [0.1, 0.1, 0.1, 0.1])  # not run at every rate: left out
    result = report.validation_report(tmp_path, [2, 4])
    assert result["cores"] == ["single_lstm", "cerebral_lstm"]
    assert result["chosen"] == {"epochs": 4, "lr": 0.001, "mean_val_accuracy": pytest.approx(0.85)}
    assert result["means"][0.01] == {2: pytest.approx(0.745), 4: pytest.approx(0.5)}
    text = (tmp_path / report.VALIDATION).read_text()
    assert "| **0.001** | **mean over the cores** | **60.00%** | **85.00%** |" in text
    assert "Chosen: `train.epochs=4`, `optim.lr=0.001`" in text and "train model=novo_lstm optim.lr=0.001" in text


def test_ties_go_to_fewer_epochs_then_the_lower_rate(tmp_path):
    write_validation_run(tmp_path, 0.01, "single_lstm", [0.5, 0.8, 0.8, 0.8])
    write_validation_run(tmp_path, 0.001, "single_lstm", [0.5, 0.8, 0.8, 0.8])
    assert report.validation_report(tmp_path, [2, 4])["chosen"] == {"epochs": 2, "lr": 0.001, "mean_val_accuracy": 0.8}


def test_a_run_without_a_validation_split_is_refused(tmp_path):
    write_validation_run(tmp_path, 0.01, "single_lstm", [0.5, 0.8], validation=False)
    with pytest.raises(ConfigError, match="did not train with data.validation=true"):
        report.validation_report(tmp_path, [2])


VALIDATED = sorted(p.parent for p in (ROOT / "results" / "tasks" / "validation").glob("*/VALIDATION.md"))


@pytest.mark.skipif(not VALIDATED, reason="no committed validation sweep")
@pytest.mark.parametrize("sweep", VALIDATED, ids=lambda p: p.name)
def test_a_committed_sweep_regenerates_and_its_choice_is_the_task_presets(sweep, tmp_path):
    """VALIDATION.md comes back from its runs' files, and conf/task/<task>.yaml trains with its choice."""
    copy = tmp_path / sweep.name
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("checkpoint*.pt"))
    generated_line = next(line for line in (sweep / report.VALIDATION).read_text().splitlines()
                          if line.startswith("Generated: "))
    grid = [int(e) for e in generated_line.rsplit("--validation ", 1)[1].rstrip("`").split(",")]
    chosen = report.validation_report(copy, grid)["chosen"]

    def strip(text):
        return [line for line in text.splitlines() if not line.startswith("Generated: ")]
    assert strip((copy / report.VALIDATION).read_text()) == strip((sweep / report.VALIDATION).read_text())
    preset = yaml.safe_load((ROOT / "conf" / "task" / f"{sweep.name}.yaml").read_text())
    assert (preset["train"]["epochs"], preset["optim"]["lr"]) == (chosen["epochs"], chosen["lr"])
