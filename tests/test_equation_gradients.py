"""The Cerebral and post-bias cores' gradients, on both paths (the equation-by-equation path
through autograd and the fused path's hand-written backward), against the gradients of the
literal float64 transcriptions of their equations in tests/test_cores.py."""

import pytest
import torch
from conftest import assert_same_gradients, random_cerebral_state
from test_cores import reference_cerebral, reference_post_bias_lstm

from cerebral import CerebralLSTM
from cerebral.cores import PostBiasLSTM

pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("fused", [False, True], ids=["equation_path", "fused"])
@pytest.mark.parametrize("layers,bias", [(2, True), (1, False)])
def test_cerebral_lstm_gradients_are_those_of_the_readme_equations(fused, layers, bias):
    torch.manual_seed(30)
    core = CerebralLSTM(3, 4, num_layers=layers, bias=bias)
    core.fused = fused
    x = torch.randn(5, 2, 3, requires_grad=True)
    h0, cu0, cl0 = (t.requires_grad_() for t in torch.utils._pytree.tree_leaves(random_cerebral_state(layers, 2, 4)))

    def flat(result):
        out, (h, (cu, cl)) = result
        return out, h, cu, cl

    def run(x, h0, cu0, cl0, *params):
        return flat(core(x, (h0, (cu0, cl0))))
    def readme(x, h0, cu0, cl0, *params):
        return flat(reference_cerebral(core, x, (h0, (cu0, cl0))))
    assert_same_gradients(run, readme, (x, h0, cu0, cl0, *core.parameters()))


@pytest.mark.parametrize("fused", [False, True], ids=["equation_path", "fused"])
@pytest.mark.parametrize("layers,bias", [(2, True), (1, False)])
def test_post_bias_lstm_gradients_are_those_of_its_equations(fused, layers, bias):
    torch.manual_seed(31)
    core = PostBiasLSTM(3, 4, num_layers=layers, bias=bias)
    core.fused = fused
    with torch.no_grad():  # post-activation biases away from their small start
        for k in range(layers):
            getattr(core, f"bias_cell_l{k}").uniform_(-0.5, 0.5)
            getattr(core, f"bias_hidden_l{k}").uniform_(-0.5, 0.5)
    x = torch.randn(5, 2, 3, requires_grad=True)
    h0, c0 = torch.randn(layers, 2, 4, requires_grad=True), torch.randn(layers, 2, 4, requires_grad=True)

    def flat(result):
        out, (h, c) = result
        return out, h, c

    def run(x, h0, c0, *params):
        return flat(core(x, (h0, c0)))
    def equations(x, h0, c0, *params):
        return flat(reference_post_bias_lstm(core, x, (h0, c0)))
    assert_same_gradients(run, equations, (x, h0, c0, *core.parameters()))
