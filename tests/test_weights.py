"""Committed weights: model.pt written from a checkpoint (scripts/release_weights.py), listed with
its SHA-256 in a manifest, and read where a clone has no checkpoint; a damaged, missing or unlisted
file is one line naming it, its expected SHA-256 and the fix."""

import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, load_script, tiny_overrides

from cerebral import evaluate, rundir
from cerebral.config import compose
from cerebral.generate import load_trained, sample
from cerebral.train import train


@pytest.fixture(scope="module")
def released(data_dir, tmp_path_factory):
    """A tiny run with its weights released, and a copy of its folder as a clone holds it."""
    root = tmp_path_factory.mktemp("weights")
    run = root / "runs" / "cerebral_lstm" / "seed0"
    train(compose(*tiny_overrides(data_dir, run)))
    load_script("release_weights").main([str(run), "--manifest", str(root / "runs")])
    clone = shutil.copytree(root / "runs", root / "clone", ignore=shutil.ignore_patterns("checkpoint*.pt", ".train.lock"))
    return run, clone / "cerebral_lstm" / "seed0"


def test_the_weights_are_the_checkpoints_in_fp32_with_the_vocabulary_and_nothing_else(released):
    run, _ = released
    weights = torch.load(run / rundir.MODEL, weights_only=True)
    state = rundir.read_checkpoint(run / rundir.CHECKPOINT)
    assert set(weights) == {"model", "vocab"} and weights["vocab"] == state["vocab"]
    for name, value in state["model"].items():
        assert torch.equal(weights["model"][name], value) and weights["model"][name].dtype == torch.float32
    (line,) = (run.parents[1] / rundir.MANIFEST).read_text().splitlines()
    assert line == f"{rundir.sha256(run / rundir.MODEL)}  cerebral_lstm/seed0/model.pt"


def test_a_clone_without_checkpoints_samples_and_evaluates_from_the_weights(released):
    run, clone = released
    assert not (clone / rundir.CHECKPOINT).exists()
    (model, vocab), (theirs, _) = load_trained(clone), load_trained(run)
    for a, b in zip(model.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert sample(model, vocab, "Moe", 20) == sample(theirs, vocab, "Moe", 20)
    assert evaluate.fixed_batch_loss(clone) == evaluate.fixed_batch_loss(run)


def one_line(run):
    result = subprocess.run([sys.executable, "-m", "cerebral.generate", str(run), "--length", "5"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.parametrize("damage", ["cut short", "missing", "unlisted"])
def test_damaged_missing_or_unlisted_weights_are_one_line_with_the_fix(damage, released, tmp_path):
    _, clone = released
    copy = shutil.copytree(clone.parents[1], tmp_path / "clone") / "cerebral_lstm" / "seed0"
    expected = rundir.sha256(clone / rundir.MODEL)
    if damage == "cut short":
        (copy / rundir.MODEL).write_bytes((copy / rundir.MODEL).read_bytes()[:1000])
        assert f"has SHA-256 {rundir.sha256(copy / rundir.MODEL)}, its manifest {expected}" in one_line(copy)
    elif damage == "missing":
        (copy / rundir.MODEL).unlink()
        assert f"model.pt is missing (expected SHA-256 {expected}); restore it from git" in one_line(copy)
    else:
        (copy.parents[1] / rundir.MANIFEST).unlink()
        assert f"is listed in no {rundir.MANIFEST} above it" in one_line(copy)


def test_a_run_with_neither_checkpoint_nor_weights_says_so(tmp_path):
    assert "does not exist, nor committed weights (model.pt)" in one_line(tmp_path)


def test_release_refuses_a_run_outside_its_manifest_folder_and_a_run_without_checkpoint(released, tmp_path):
    run, clone = released
    with pytest.raises(SystemExit, match="is not below --manifest"):
        load_script("release_weights").main([str(run), "--manifest", str(tmp_path)])
    with pytest.raises(SystemExit, match="checkpoint.pt does not exist"):
        load_script("release_weights").main([str(clone), "--manifest", str(clone.parents[1])])
