"""The evidence of docs/PROTOCOL.md, as tests.

The slow tests train the paper-size models for the fewest epochs that show each effect: undo one
choice of the default protocol and the first epochs move away from the published curve, which
the defaults follow within 0.05 (tests/test_paper.py). At paper size each takes about one to
three minutes on an idle 2-core CPU, several times that while another run shares the cores
(`make test-slow`). The fast tests hold the documents' own structure: numbered
sections and links into them that resolve (tests/test_docs.py checks the citations in code).
"""

import math
import re

import pytest
import torch
from conftest import ROOT

from cerebral import data as chardata
from cerebral.config import compose
from cerebral.curves import published_curves
from cerebral.train import train

DOCS = {"PROTOCOL": ("P", ROOT / "docs" / "PROTOCOL.md"), "MODELS": ("M", ROOT / "docs" / "MODELS.md")}


def train_paper_size(data_dir, tmp_path, model, epochs, *overrides, name=None):
    """`python -m cerebral.train model=MODEL train.epochs=EPOCHS OVERRIDES`, seed 0, in tmp_path."""
    return train(compose(f"model={model}", f"train.epochs={epochs}", f"data.dir={data_dir}",
                         f"out_dir={tmp_path / (name or model)}", *overrides))


def distance(curve, published):
    """The largest |ours - published| over the epochs of `curve`."""
    return max(abs(a - b) for a, b in zip(curve, published, strict=True))


def headings(doc):
    letter, path = DOCS[doc]
    return [int(n) for n in re.findall(rf"^## {letter}(\d+)\. \S", path.read_text(encoding="utf-8"), re.M)]


@pytest.mark.parametrize("doc,count", [("PROTOCOL", 9), ("MODELS", 3)])
def test_sections_are_numbered_from_one_without_gaps(doc, count):
    assert headings(doc) == list(range(1, len(headings(doc)) + 1))
    assert len(headings(doc)) >= count


def test_p1_unigram_entropy_of_the_targets(data_dir):
    """docs/PROTOCOL.md, P1: 3.506 nats, against ln 89 = 4.489 for a uniform guess."""
    targets = chardata.load(data_dir).targets.flatten()
    p = torch.bincount(targets).double() / targets.numel()
    p = p[p > 0]
    assert -(p * p.log()).sum().item() == pytest.approx(3.506, abs=5e-4)
    assert math.log(89) == pytest.approx(4.489, abs=5e-4)


@pytest.mark.slow
def test_p4_pytorch_accumulator_leaves_the_single_lstm_curve(data_dir, tmp_path):
    """docs/PROTOCOL.md, P4: with Adagrad's accumulator at PyTorch's 0, epoch 2 of the single LSTM
    is about 1.57 (measured 1.515), where the published curve is at 3.70."""
    published = published_curves(data_dir)["single_lstm"]
    ours = train_paper_size(data_dir, tmp_path, "single_lstm", 3, "optim.initial_accumulator_value=0")
    assert published[2] - ours[2] > 1.5, (ours, published[:3])
    assert ours[2] == pytest.approx(1.57, abs=0.15), ours
    assert published[0] - ours[0] > 1.5, (ours, published[:3])  # already at epoch 0: about 2.3 vs 4.30


@pytest.mark.slow
def test_p5_per_matrix_xavier_leaves_the_single_lstm_curve(data_dir, tmp_path):
    """docs/PROTOCOL.md, P5: Xavier per [512, 512] gate matrix (bound 0.0765, twice TF1's 0.0383
    over the stacked [4, 512, 512] tensor) puts epoch 1 of the single LSTM near 3.7 (measured
    3.693), where the published curve is at 4.02."""
    published = published_curves(data_dir)["single_lstm"]
    ours = train_paper_size(data_dir, tmp_path, "single_lstm", 2, "model.xavier_stack=1")
    assert published[1] - ours[1] > 0.2, (ours, published[:2])


@pytest.mark.slow
def test_p8_one_stacked_cerebral_tensor_leaves_the_cerebral_curve(data_dir, tmp_path):
    """docs/PROTOCOL.md, P8: the Cerebral gates as one [8, 512, 512] tensor (bound 0.0271) instead
    of one [4, 512, 512] tensor per path (0.0383) learn more slowly. Against the default with the
    same seed (same batches, same initial directions, only the scale differs), epoch 1 is about
    0.1 higher (measured 3.744 against 3.649; published 3.682), and the largest distance to the
    published curve over epochs 0-1 grows (0.061 against 0.033)."""
    published = published_curves(data_dir)["cerebral_lstm"][:2]
    default = train_paper_size(data_dir, tmp_path, "cerebral_lstm", 2, name="default")
    ours = train_paper_size(data_dir, tmp_path, "cerebral_lstm", 2, "model.xavier_stack=8", name="stack8")
    assert ours[1] - default[1] > 0.05, (ours, default, published)
    assert distance(ours, published) > distance(default, published), (ours, default, published)


@pytest.mark.slow
def test_p8_cerebral_gate_biases_leave_the_cerebral_curve(data_dir, tmp_path):
    """docs/PROTOCOL.md, P8: zero-initialised gate biases (the upstream README's b_uf ... b_lo)
    put epoch 0 of the Cerebral LSTM near 3.8 (measured 3.793), where the published curve starts
    at 4.27."""
    published = published_curves(data_dir)["cerebral_lstm"]
    ours = train_paper_size(data_dir, tmp_path, "cerebral_lstm", 1, "model.gate_bias=true")
    assert published[0] - ours[0] > 0.2, (ours, published[:1])
