"""`python -m cerebral.evaluate RUN_DIR`: a trained model's loss on fixed batches, beside its record."""

import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_overrides

from cerebral import evaluate
from cerebral.config import compose
from cerebral.train import train


@pytest.fixture(scope="module")
def tiny_run(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("evaluate") / "run"
    losses = train(compose(*tiny_overrides(data_dir, run)))
    return run, losses


def test_the_loss_on_fixed_batches_is_the_same_every_time_and_bf16_moves_it_a_little(tiny_run):
    run, _ = tiny_run
    fp32 = evaluate.fixed_batch_loss(run)
    assert fp32 == evaluate.fixed_batch_loss(run, "fp32")  # the same batches, the same model
    bf16 = evaluate.fixed_batch_loss(run, "bf16")
    assert bf16 != fp32 and abs(bf16 - fp32) < 0.01


def test_the_command_prints_the_loss_beside_the_recorded_final_training_loss(tiny_run):
    run, losses = tiny_run
    result = subprocess.run([sys.executable, "-m", "cerebral.evaluate", str(run)], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"{run}: loss {evaluate.fixed_batch_loss(run):.5f} on 20 fixed batches of 128 "
                                     f"(fp32); recorded final training loss {losses[-1]:.5f} (epoch {len(losses) - 1})")


def test_a_run_without_a_checkpoint_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cerebral.evaluate", str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'checkpoint.pt'} does not exist")


def copy_of(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_a_malformed_record_is_one_line_before_the_model_is_evaluated(tiny_run, tmp_path, monkeypatch):
    run = copy_of(tiny_run[0], tmp_path)
    (run / "loss.txt").write_text("[0] loss : not a number\n")
    monkeypatch.setattr(evaluate, "fixed_batch_loss", lambda *args: pytest.fail("evaluated before the record was read"))
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(run)])
    assert str(stop.value.code).startswith("error: ") and "loss.txt" in str(stop.value.code)


def test_a_run_whose_data_are_too_few_for_the_fixed_batches_is_one_line(tiny_run, tmp_path):
    run = copy_of(tiny_run[0], tmp_path)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("seq_len: 20", "seq_len: 200"))  # 1,525 sequences
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(run)])
    assert str(stop.value.code).startswith(f"error: {run}: its data give 1525 training sequences")
