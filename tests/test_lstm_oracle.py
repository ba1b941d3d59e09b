"""nn.LSTM as the oracle: with zero post-activation biases, PostBiasLSTM computes nn.LSTM's function,
through its converters, on the fused path and on the equation path, within 1e-5 in fp32, in every
mode of nn.LSTM: layers, directions, batch_first, bias, projection, and plain, packed (sorted and
unsorted) and unbatched input. The Cerebral core faces nn.LSTM with its lower path shut."""

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from cerebral import CerebralLSTM, PostBiasLSTM
from cerebral.cores import _swap_g_and_o

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

INPUTS = ["plain", "packed sorted", "packed unsorted", "unbatched"]
BATCH, STEPS, FEATURES, HIDDEN, PROJECTION = 4, 7, 5, 6, 3


def make_input(kind, batch_first, generator):
    """(input for the module, the leaf tensor its gradient reaches, batch or None if unbatched)."""
    if kind == "unbatched":
        x = torch.randn(STEPS, FEATURES, generator=generator, requires_grad=True)
        return x, x, None
    x = torch.randn(*((BATCH, STEPS) if batch_first else (STEPS, BATCH)), FEATURES, generator=generator,
                    requires_grad=True)
    if kind == "plain":
        return x, x, BATCH
    lengths = [7, 5, 2, 1] if kind == "packed sorted" else [2, 7, 1, 5]  # a sequence of length 1 among them
    return pack_padded_sequence(x, torch.tensor(lengths), batch_first, enforce_sorted=kind == "packed sorted"), x, BATCH


def make_state(module, batch, generator):
    directions, layers = 2 if module.bidirectional else 1, module.num_layers
    batch_shape = (batch,) if batch else ()
    h = torch.randn(layers * directions, *batch_shape, module.proj_size or HIDDEN, generator=generator)
    c = torch.randn(layers * directions, *batch_shape, HIDDEN, generator=generator)
    return h.requires_grad_(), c.requires_grad_()


def run(module, x, state):
    """The module's output (as one tensor) and final state, after a backward pass of a weighted sum of them."""
    output, (h, c) = module(x, state)
    if isinstance(output, PackedSequence):
        output = output.data
    weights = torch.linspace(-1, 1, output.numel()).view_as(output)
    ((weights * output).sum() + h.sum() + 2 * c.sum()).backward()
    return output, h, c


MODES = list(itertools.product([1, 2], [False, True], [False, True], [True, False], [0, PROJECTION], INPUTS,
                               [True, False]))


@pytest.mark.parametrize("layers,bidirectional,batch_first,bias,proj_size,kind,fused", MODES)
def test_post_bias_lstm_from_nn_lstm_matches_it_in_outputs_states_and_every_gradient(layers, bidirectional, batch_first,
                                                                                    bias, proj_size, kind, fused):
    torch.manual_seed(layers * 10 + bias * 2 + batch_first)
    lstm = nn.LSTM(FEATURES, HIDDEN, layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional,
                   proj_size=proj_size)
    core = PostBiasLSTM.from_lstm(lstm)
    core.fused = fused
    check_against_lstm(lstm, core, kind, batch_first)


@pytest.mark.parametrize("layers,bidirectional,proj_size,kind,fused",
                         list(itertools.product([1, 2], [False, True], [0, PROJECTION], INPUTS, [True, False])))
def test_post_bias_lstm_without_post_biases_is_nn_lstm(layers, bidirectional, proj_size, kind, fused):
    """post_bias=False (the learned-projection baselines' core): nn.LSTM's parameters and function."""
    torch.manual_seed(layers + 5 * bidirectional)
    lstm = nn.LSTM(FEATURES, HIDDEN, layers, bias=False, bidirectional=bidirectional, proj_size=proj_size)
    core = PostBiasLSTM.from_lstm(lstm, post_bias=False)
    core.fused = fused
    assert sorted(n for n, _ in core.named_parameters()) == sorted(n for n, _ in lstm.named_parameters())
    check_against_lstm(lstm, core, kind, batch_first=False)


def check_against_lstm(lstm, core, kind, batch_first):
    """Outputs, final states and the gradients of the input, the state and every parameter of
    `core` (converted from `lstm`) against `lstm`'s, within 1e-5."""
    results = {}
    for name, module in (("lstm", lstm), ("ours", core)):
        generator = torch.Generator().manual_seed(7)  # the same input and state for both
        x, leaf, batch = make_input(kind, batch_first, generator)
        state = make_state(module, batch, generator)
        results[name] = [*run(module, x, state), leaf.grad, *(s.grad for s in state)]
    for ours, theirs in zip(results["ours"], results["lstm"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    converted_grads = PostBiasLSTM.from_lstm(_grads_as_lstm(lstm))
    for name, p in core.named_parameters():
        if name.startswith(("bias_cell", "bias_hidden")):
            assert p.grad is not None  # the post-activation biases get gradients, though zero
            continue
        torch.testing.assert_close(p.grad, getattr(converted_grads, name), rtol=1e-5, atol=1e-5)


def _grads_as_lstm(lstm):
    """An nn.LSTM whose parameters are `lstm`'s gradients (so that from_lstm reorders them alike)."""
    copy = nn.LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, bias=lstm.bias, batch_first=lstm.batch_first,
                   bidirectional=lstm.bidirectional, proj_size=lstm.proj_size)
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


@pytest.mark.parametrize("layers,bidirectional,batch_first,proj_size,kind,fused",
                         list(itertools.product([1, 2], [False, True], [False, True], [0, PROJECTION], INPUTS,
                                                [True, False])))
def test_cerebral_lstm_with_its_lower_path_shut_is_nn_lstm(layers, bidirectional, batch_first, proj_size, kind, fused):
    """Upper path = nn.LSTM's weights, lower output gate shut (bias -1e4: sigmoid is exactly 0 in
    fp32), so h = [W_hr] U_o * tanh(U_c): the Cerebral core itself faces the oracle, forward."""
    torch.manual_seed(layers + 2 * batch_first)
    lstm = nn.LSTM(FEATURES, HIDDEN, layers, batch_first=batch_first, bidirectional=bidirectional, proj_size=proj_size)
    core = CerebralLSTM(FEATURES, HIDDEN, layers, batch_first=batch_first, bidirectional=bidirectional,
                        proj_size=proj_size)
    core.fused = fused
    with torch.no_grad():
        for k in core._layer_keys():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                ours = getattr(core, f"{name}_l{k}").view(4, 2, HIDDEN, -1)  # gate blocks i, f, o, g; upper, lower
                ours[:, 0] = _swap_g_and_o(getattr(lstm, f"{name}_l{k}")).view(4, HIDDEN, -1)
            getattr(core, f"bias_ih_l{k}").view(4, 2, HIDDEN)[2, 1] = -1e4  # the lower path's output gate
            if proj_size:
                getattr(core, f"weight_hr_l{k}").copy_(getattr(lstm, f"weight_hr_l{k}"))
    x, _, batch = make_input(kind, batch_first, torch.Generator().manual_seed(3))
    h0, c0 = make_state(lstm, batch, torch.Generator().manual_seed(4))
    expected, (h_lstm, c_lstm) = lstm(x, (h0, c0))
    output, (h, (c_upper, _)) = core(x, (h0, (c0, torch.randn_like(c0))))
    if kind.startswith("packed"):
        assert torch.equal(output.batch_sizes, expected.batch_sizes)
        assert torch.equal(output.unsorted_indices, expected.unsorted_indices) if kind == "packed unsorted" else \
            output.unsorted_indices is None
        output, expected = output.data, expected.data
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_lstm, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_upper, c_lstm, rtol=1e-5, atol=1e-5)
