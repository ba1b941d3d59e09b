"""What the classifiers and the sampler report is computed on what they say: test metrics on the
test split, a digits split that is a partition of the full set, and sampling from
softmax(logits / temperature)."""

import csv
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cerebral.train as training
from cerebral import seqdata
from cerebral.config import compose
from cerebral.generate import sample
from cerebral.tasks import make_task

# --- test metrics come from the test split --------------------------------------------------------


def flipped_split(n=21, steps=3, features=2, seed=0):
    """Train and test hold the same inputs with opposite binary labels, so for any classifier
    test accuracy = 1 - train accuracy, and n odd keeps the two from meeting at 0.5."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, steps, features, generator=g)
    y = (x[:, -1, 1] > x[:, -1, 0]).long()  # the larger feature's index
    return seqdata.ClassificationData(x, y, x.clone(), 1 - y, num_classes=2)


class LastStep(nn.Module):
    """A fixed classifier: class k's logit is feature k of the last time step, times 5."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(5.0))

    def forward(self, x):
        return self.scale * x[:, -1]


def digits_task(monkeypatch, data):
    monkeypatch.setattr(seqdata, "load_digits", lambda *args, **kwargs: data)
    return make_task(compose("task=digits", "model.state_size=4", "device=cpu"))


def test_test_metrics_are_computed_on_the_test_split(monkeypatch):
    data = flipped_split()
    task = digits_task(monkeypatch, data)
    model = LastStep()
    metrics = task.evaluate(model)
    with torch.no_grad():
        logits = model(data.test_x)
        test_loss = F.cross_entropy(logits, data.test_y).item()
        train_accuracy = (model(data.train_x).argmax(-1) == data.train_y).float().mean().item()
    assert train_accuracy == 1.0  # the constructed labels are what LastStep predicts
    assert metrics["train_accuracy"] == pytest.approx(1.0)
    assert metrics["test_accuracy"] == pytest.approx(0.0)
    assert metrics["test_loss"] == pytest.approx(test_loss, rel=1e-6)


def test_a_trained_classifiers_test_accuracy_is_its_accuracy_on_the_test_split(monkeypatch, tmp_path):
    """Through the training loop: metrics.csv's test accuracy is what the trained model scores on
    the test split, and 1 - its train accuracy on the flipped labels."""
    data = flipped_split(n=41)
    monkeypatch.setattr(seqdata, "load_digits", lambda *args, **kwargs: data)
    built = []
    real = training.make_task

    def capture(cfg):
        built.append(real(cfg))
        return built[-1]

    monkeypatch.setattr(training, "make_task", capture)
    run = tmp_path / "run"
    training.train(compose("task=digits", "model=single_lstm", "model.state_size=4", "device=cpu",
                           "train.epochs=2", "train.batch_size=8", f"out_dir={run}"))
    with open(run / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    model = built[0].model.eval()
    with torch.no_grad():
        test_logits, train_logits = model(data.test_x), model(data.train_x)
    test_accuracy = (test_logits.argmax(-1) == data.test_y).float().mean().item()
    train_accuracy = (train_logits.argmax(-1) == data.train_y).float().mean().item()
    assert float(last["test_accuracy"]) == pytest.approx(test_accuracy)
    assert float(last["train_accuracy"]) == pytest.approx(train_accuracy)
    assert float(last["test_accuracy"]) == pytest.approx(1 - float(last["train_accuracy"]))
    assert float(last["test_loss"]) == pytest.approx(F.cross_entropy(test_logits, data.test_y).item(), rel=1e-5)


# --- the digits split --------------------------------------------------------------------------------

def items(x, y):
    """Each example as a hashable (pixels, label), counted."""
    return Counter((row.numpy().tobytes(), int(label)) for row, label in zip(x, y, strict=True))


@pytest.mark.parametrize("test_fraction,split_seed", [(0.25, 0), (0.3, 7)])
def test_the_digits_split_is_a_partition_of_the_full_set(test_fraction, split_seed):
    from sklearn import datasets

    digits = datasets.load_digits()
    full = items(torch.from_numpy(digits.images / 16.0).float(), digits.target)
    data = seqdata.load_digits(test_fraction, split_seed)
    train, test = items(data.train_x, data.train_y), items(data.test_x, data.test_y)
    assert len(data.train_y) + len(data.test_y) == 1797
    assert len(data.test_y) == math.ceil(1797 * test_fraction)
    assert not set(train) & set(test)  # disjoint (the 1797 digits are all different)
    assert train + test == full        # and together exactly the full set
    assert set(data.test_y.tolist()) == set(range(10))


# --- sampling temperature --------------------------------------------------------------------------

class FixedLogits(nn.Module):
    """A character model whose next-character logits are always `logits`, whatever it read."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits, dtype=torch.float32))

    def forward(self, tokens, state=None):
        return self.logits.expand(tokens.shape[0], tokens.shape[1], -1), state


VOCAB = ["a", "b", "c", "d"]
LOGITS = [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("temperature", [1e-3, 0.01])
def test_near_zero_temperature_samples_the_argmax(temperature):
    logits = [0.1, 2.0, 1.9, -1.0]
    text = sample(FixedLogits(logits), VOCAB, "a", 400, temperature=temperature, seed=0)
    assert text == "b" * 400


@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_frequencies_follow_softmax_of_logits_over_temperature(temperature):
    n = 6000
    text = sample(FixedLogits(LOGITS), VOCAB, "a", n, temperature=temperature, seed=0)
    counts = Counter(text)
    expected = torch.softmax(torch.tensor(LOGITS, dtype=torch.float64) / temperature, dim=0).tolist()
    for char, p in zip(VOCAB, expected, strict=True):
        sd = math.sqrt(p * (1 - p) / n)
        assert abs(counts[char] / n - p) < 5 * sd + 1e-3, (char, counts[char] / n, p)
