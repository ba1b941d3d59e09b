import math

import pytest
import torch

from cerebral.config import compose
from cerebral.models import build_model, tf_xavier_bound

PAPER_MODELS = ["single_lstm", "stacked_lstm", "cerebral_lstm"]
# docs/PROTOCOL.md, P5: TF1 Xavier over the stacked gate tensors
GATE_BOUNDS = {"single_lstm": math.sqrt(3 / 2048), "stacked_lstm": math.sqrt(3 / 4096),
               "cerebral_lstm": math.sqrt(3 / 2048)}


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_initialisation_bounds(name):
    torch.manual_seed(0)
    model = build_model(compose(f"model={name}").model, vocab_size=89)
    gate_weights = [p for n, p in model.named_parameters() if n.startswith("core.weight_")]
    assert gate_weights
    for w in gate_weights:
        assert 0.99 * GATE_BOUNDS[name] < w.abs().max() <= GATE_BOUNDS[name]
    for w in (model.embedding.weight, model.head.weight):
        assert 0.99 * math.sqrt(6 / 601) < w.abs().max() <= math.sqrt(6 / 601)
    biases = [p for n, p in model.named_parameters() if "bias" in n]
    assert all((b == 0).all() for b in biases)
    gate_biases = [n for n, _ in model.named_parameters() if n.startswith("core.bias_ih")]
    assert gate_biases == []  # no biases inside the gates in any published run
    post_biases = sorted(n for n, _ in model.named_parameters() if n.startswith("core.bias_"))
    expected = ["core.bias_cell_l0", "core.bias_cell_l1", "core.bias_hidden_l0", "core.bias_hidden_l1"]
    assert post_biases == (expected if name == "stacked_lstm" else [])


def test_tf_xavier_bound_matches_the_protocol_numbers():
    assert tf_xavier_bound(512, 512, 4) == pytest.approx(0.0383, abs=5e-5)
    assert tf_xavier_bound(512, 512, 8) == pytest.approx(0.0271, abs=5e-5)
    assert tf_xavier_bound(89, 512) == pytest.approx(0.0999, abs=5e-5)


@pytest.mark.parametrize("name", PAPER_MODELS)
@pytest.mark.parametrize("extra", [[], ["model.init=torch", "model.gate_bias=true"]])
def test_every_model_runs_forward_and_backward(name, extra):
    torch.manual_seed(0)
    model = build_model(compose(f"model={name}", "model.state_size=24", *extra).model, vocab_size=11)
    tokens = torch.randint(0, 11, (3, 7))
    logits, _ = model(tokens)
    assert logits.shape == (3, 7, 11)
    torch.nn.functional.cross_entropy(logits.reshape(-1, 11), tokens.reshape(-1)).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


def test_gate_bias_option_adds_biases_and_torch_init_keeps_pytorch_defaults():
    cfg = compose("model=cerebral_lstm", "model.state_size=16", "model.gate_bias=true", "model.init=torch")
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab_size=5)
    assert model.core.bias_ih_l0.shape == (8 * 16,)
    assert model.core.bias_ih_l0.abs().max() > 0  # PyTorch init, not TF1's zeros
    assert model.embedding.weight.std() > 0.5     # nn.Embedding's N(0, 1)
