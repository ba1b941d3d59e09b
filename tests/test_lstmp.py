"""The learned-projection baselines (model=lstmp, model=lstmp_matched): a projected LSTM of
model.cells cells on the fused core, initialised by the paper's protocol, with the parameter
counts the docs give, against nn.LSTM's own projected LSTM."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from cerebral import PostBiasLSTM
from cerebral.config import CONF_DIR, ConfigError, check_config, complete, compose
from cerebral.models import build_model, parameter_count

VOCAB = 89  # Simpsons
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


def built(*overrides):
    with torch.device("meta"):
        return build_model(compose(*overrides).model, VOCAB)


def test_lstmp_is_a_projected_lstm_of_twice_the_state_size_in_cells_without_biases():
    model = built("model=lstmp")
    core = model.core
    assert isinstance(core, PostBiasLSTM) and not core.post_bias
    assert (core.hidden_size, core.proj_size, core.bias, core.num_layers) == (1024, 512, False, 1)
    assert model.embedding.weight.shape == (VOCAB, 512) and model.head.weight.shape == (VOCAB, 512)
    # gates (4 x 1024) over [x (512), h (512)], the projection (512 x 1024), embedding, head with bias
    assert parameter_count(model) == 4 * 1024 * (512 + 512) + 512 * 1024 + VOCAB * 512 + 512 * VOCAB + VOCAB == 4_809_817
    assert built("model=lstmp", "model.state_size=16").core.hidden_size == 32  # the cells follow the state size


def test_lstmp_matched_has_the_cerebral_lstm_parameter_count():
    matched, cerebral = parameter_count(built("model=lstmp_matched")), parameter_count(built("model=cerebral_lstm"))
    assert matched == 4 * 910 * (512 + 512) + 512 * 910 + VOCAB * 512 + 512 * VOCAB + VOCAB
    assert abs(matched - cerebral) <= 0.01 * cerebral
    assert parameter_count(built("model=lstmp")) > 1.1 * cerebral  # lstmp itself is not matched


def test_the_paper_protocol_initialises_the_gates_as_one_four_gate_tensor_and_the_projection_as_a_matrix():
    torch.manual_seed(0)
    model = build_model(compose("model=lstmp", "model.state_size=64").model, VOCAB)
    gate_bound = math.sqrt(6 / (4 * (64 + 128)))  # TF1 Xavier on [4, 64, 128]
    projection_bound = math.sqrt(6 / (64 + 128))  # 2-D Xavier on weight_hr (64, 128)
    for name, bound in (("weight_ih_l0", gate_bound), ("weight_hh_l0", gate_bound), ("weight_hr_l0", projection_bound)):
        weight = getattr(model.core, name)
        assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound, name


def test_a_cell_count_the_state_cannot_be_projected_from_or_on_another_core_is_refused():
    with pytest.raises(ConfigError, match=r"model\.cells must be null or an integer above model\.state_size \(512\)"):
        check_config(compose("model=lstmp", "model.cells=512"))
    with pytest.raises(ConfigError, match=r"model\.cells must be null unless model\.core=lstm"):
        check_config(compose("model=cerebral_lstm", "model.cells=1024"))
    assert complete({"model": {"name": "single_lstm"}}).model.cells is None  # runs saved before the key


def test_lstmp_computes_nn_lstms_projected_lstm_with_the_same_weights():
    torch.manual_seed(0)
    model = build_model(compose("model=lstmp", "model.state_size=8").model, VOCAB)
    lstm = model.core.to_lstm()
    assert (lstm.hidden_size, lstm.proj_size) == (16, 8)
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(model.core(x)[0], lstm(x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model,preset", [("lstmp", "generalization"), ("lstmp_matched", "equal_size")])
def test_the_presets_run_the_learned_projection_baselines(model, preset):
    sweep = OmegaConf.load(CONF_DIR / "experiment" / f"{preset}.yaml").hydra.sweeper.params.model
    assert model in sweep.split(",")
