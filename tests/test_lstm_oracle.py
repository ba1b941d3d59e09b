"""nn.LSTM as the oracle: with zero post-activation biases, PostBiasLSTM computes nn.LSTM's function,
through its converters, on the fused path and on the equation path, within 1e-5 in fp32."""

import itertools

import pytest
import torch
from torch import nn

from cerebral import CerebralLSTM, PostBiasLSTM
from cerebral.cores import _swap_g_and_o

MODES = list(itertools.product([1, 2], [True, False], [True, False], ["batched", "unbatched"], [True, False],
                               [False, True]))


def run(module, x, state):
    output, (h, c) = module(x, state)
    weights = torch.linspace(-1, 1, output.numel()).view_as(output)
    ((weights * output).sum() + h.sum() + 2 * c.sum()).backward()
    return output, h, c


@pytest.mark.parametrize("layers,bias,batch_first,shape,fused,bidirectional", MODES)
def test_post_bias_lstm_from_nn_lstm_matches_it_in_outputs_states_and_every_gradient(layers, bias, batch_first,
                                                                                    shape, fused, bidirectional):
    torch.manual_seed(layers * 10 + bias * 2 + batch_first)
    lstm = nn.LSTM(5, 6, layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    core = PostBiasLSTM.from_lstm(lstm)
    core.fused = fused
    x = torch.randn(*((3, 7) if batch_first else (7, 3)), 5) if shape == "batched" else torch.randn(7, 5)
    directions = 2 if bidirectional else 1
    state_shape = (layers * directions, 3, 6) if shape == "batched" else (layers * directions, 6)
    state = (torch.randn(state_shape), torch.randn(state_shape))
    inputs = {}
    for name, module in (("lstm", lstm), ("ours", core)):
        leaves = [t.clone().requires_grad_() for t in (x, *state)]
        inputs[name] = leaves
        inputs[name + "_out"] = run(module, leaves[0], tuple(leaves[1:]))
    for ours, theirs in zip(inputs["ours_out"], inputs["lstm_out"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(inputs["ours"], inputs["lstm"], strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-5)
    converted_grads = PostBiasLSTM.from_lstm(_grads_as_lstm(lstm))
    for name, p in core.named_parameters():
        if name.startswith(("bias_cell", "bias_hidden")):
            assert p.grad is not None  # the post-activation biases get gradients, though zero
            continue
        torch.testing.assert_close(p.grad, getattr(converted_grads, name), rtol=1e-5, atol=1e-5)


def _grads_as_lstm(lstm):
    """An nn.LSTM whose parameters are `lstm`'s gradients (so that from_lstm reorders them alike)."""
    copy = nn.LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, bias=lstm.bias, batch_first=lstm.batch_first,
                   bidirectional=lstm.bidirectional)
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            getattr(copy, name).copy_(p.grad)
    return copy


def test_to_lstm_round_trips_and_refuses_post_activation_biases():
    torch.manual_seed(3)
    lstm = nn.LSTM(4, 5, 2, batch_first=True)
    back = PostBiasLSTM.from_lstm(lstm).to_lstm()
    for (name, a), b in zip(lstm.named_parameters(), back.parameters(), strict=True):
        assert torch.equal(a, b), name
    core = PostBiasLSTM(4, 5)
    with pytest.raises(ValueError, match="bias_cell_l0 is not zero"):
        core.to_lstm()
    with torch.no_grad():
        core.bias_cell_l0.zero_()
        core.bias_hidden_l0.zero_()
    x = torch.randn(6, 2, 4)
    torch.testing.assert_close(core.to_lstm()(x)[0], core(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers,batch_first,shape,fused,bidirectional",
                         list(itertools.product([1, 2], [True, False], ["batched", "unbatched"], [True, False],
                                                [False, True])))
def test_cerebral_lstm_with_its_lower_path_shut_is_nn_lstm(layers, batch_first, shape, fused, bidirectional):
    """Upper path = nn.LSTM's weights, lower output gate shut (bias -1e4: sigmoid is exactly 0 in
    fp32), so h = U_o * tanh(U_c): the Cerebral core itself faces the oracle, forward."""
    torch.manual_seed(layers + 2 * batch_first)
    lstm = nn.LSTM(5, 6, layers, batch_first=batch_first, bidirectional=bidirectional)
    core = CerebralLSTM(5, 6, layers, batch_first=batch_first, bidirectional=bidirectional)
    core.fused = fused
    with torch.no_grad():
        for k in core._layer_keys():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                ours = getattr(core, f"{name}_l{k}").view(4, 2, 6, -1)  # gate blocks i, f, o, g; upper, lower
                ours[:, 0] = _swap_g_and_o(getattr(lstm, f"{name}_l{k}")).view(4, 6, -1)
            getattr(core, f"bias_ih_l{k}").view(4, 2, 6)[2, 1] = -1e4  # the lower path's output gate
    x = torch.randn(*((3, 7) if batch_first else (7, 3)), 5) if shape == "batched" else torch.randn(7, 5)
    expected, (h_lstm, c_lstm) = lstm(x)
    output, (h, (c_upper, _)) = core(x)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_lstm, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_upper, c_lstm, rtol=1e-5, atol=1e-5)
