"""Checks that need a CUDA device (`make gpu-check` runs them on a GPU machine; elsewhere they
are skipped). CEREBRAL_TEST_DEVICE=cpu runs the same checks on the CPU: the CPU form of
`make gpu-check` does, so that CI exercises them end to end."""

import os
from functools import partial

import pytest
import torch
from conftest import tiny_overrides
from torch.nn.utils.rnn import pack_padded_sequence

from cerebral.config import compose
from cerebral.cores import CerebralLSTM, PostBiasLSTM
from cerebral.precision import autocast
from cerebral.train import train

DEVICE = os.environ.get("CEREBRAL_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="needs a CUDA device (make gpu-check runs these on a GPU machine)"),
]


def outputs_and_gradients(core, x, precision, lengths=None):
    core.zero_grad()
    x.grad = None
    with autocast(precision, x.device):
        output, (h, *cells) = core(x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=False))
    output = output if lengths is None else output.data
    torch.manual_seed(7)
    weights = torch.randn(output.shape, device=x.device)
    (weights * output.float()).sum().backward()
    return [output.detach().float()] + [p.grad.clone() for p in core.parameters()] + [x.grad.clone()]


@pytest.mark.parametrize("mode", ["plain", "packed bidirectional projected"])
@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-5), ("bf16", 0.08)])
@pytest.mark.parametrize("core_class", [CerebralLSTM, PostBiasLSTM])
def test_fused_path_matches_the_equation_path_on_the_device(core_class, precision, tolerance, mode):
    torch.manual_seed(0)
    extra = dict(bidirectional=True, proj_size=16) if mode != "plain" else {}
    core = core_class(24, 32, 2, **extra).to(DEVICE)
    x = torch.randn(12, 8, 24, device=DEVICE, requires_grad=True)
    lengths = torch.tensor([12, 3, 1, 7, 12, 5, 9, 2]) if mode != "plain" else None
    core.fused = True
    fused = outputs_and_gradients(core, x, precision, lengths)
    core.fused = False
    reference = outputs_and_gradients(core, x, precision, lengths)
    for ours, theirs in zip(fused, reference, strict=True):
        assert ours.device.type == torch.device(DEVICE).type
        scale = theirs.abs().max().clamp_min(1e-6)
        assert ((ours - theirs).abs().max() / scale).item() < tolerance


@pytest.mark.parametrize("mode", ["plain", "packed bidirectional projected"])
@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("bf16", 0.08)])
@pytest.mark.parametrize("core_class", [CerebralLSTM, partial(PostBiasLSTM, post_bias=False)], ids=["cerebral", "lstmp"])
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_the_lstm_backend_matches_the_fused_path_on_the_device(core_class, precision, tolerance, mode, monkeypatch):
    """train.backend=lstm: on CUDA, cuDNN's LSTM on weights computed from ours (TF32 off, as training has it)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    extra = dict(bidirectional=True, proj_size=16) if mode != "plain" else {}
    core = core_class(24, 32, 2, **extra).to(DEVICE)
    x = torch.randn(12, 8, 24, device=DEVICE, requires_grad=True)
    lengths = torch.tensor([12, 3, 1, 7, 12, 5, 9, 2]) if mode != "plain" else None
    fused = outputs_and_gradients(core, x, precision, lengths)
    core.backend = "lstm"
    lstm = outputs_and_gradients(core, x, precision, lengths)
    for ours, theirs in zip(lstm, fused, strict=True):
        assert ours.device.type == torch.device(DEVICE).type
        scale = theirs.abs().max().clamp_min(1e-6)
        assert ((ours.float() - theirs).abs().max() / scale).item() < tolerance


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_run_on_the_device_resumes_bit_for_bit(precision, data_dir, tmp_path):
    def run(name, epochs):
        return train(compose(*tiny_overrides(data_dir, tmp_path / name, f"device={DEVICE}",
                                                                 f"train.precision={precision}", f"train.epochs={epochs}")))
    straight = run("a", 3)
    run("b", 2)
    assert run("b", 3) == straight
    assert (tmp_path / "a" / "loss.txt").read_bytes() == (tmp_path / "b" / "loss.txt").read_bytes()
