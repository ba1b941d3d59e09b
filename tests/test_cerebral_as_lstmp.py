"""A Cerebral LSTM of state H is an nn.LSTM of 2H cells whose projection is fixed to [I I] (or
[W_hr W_hr]): `CerebralLSTM.to_lstm()` and `from_lstm()` hold the full cell, both paths live,
against PyTorch's own projected LSTM in every mode the module supports, in outputs, final states
and every gradient, and the oracle fails when the mapping is broken."""

import itertools

import pytest
import torch
from test_lstm_oracle import INPUTS, make_input, run
from torch import nn

from cerebral import CerebralLSTM
from cerebral.cores import CerebralLSTMPrinted

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

FEATURES, HIDDEN, PROJECTION = 5, 3, 2  # nn.LSTM: 2 * HIDDEN cells


def make_state(module, batch, generator):
    """Random (h, c) of nn.LSTM's shapes, c of 2H: the Cerebral core takes it with stacked_state."""
    layers = module.num_layers * (2 if module.bidirectional else 1)
    batch_shape = (batch,) if batch else ()
    width = module.proj_size or module.hidden_size
    h = torch.randn(layers, *batch_shape, width, generator=generator)
    c = torch.randn(layers, *batch_shape, 2 * HIDDEN, generator=generator)
    return h.requires_grad_(), c.requires_grad_()


def results(module, kind, batch_first):
    generator = torch.Generator().manual_seed(7)  # the same input and state for every module
    x, leaf, batch = make_input(kind, batch_first, generator)
    state = make_state(module, batch, generator)
    return [*run(module, x, state), leaf.grad, *(s.grad for s in state)]


def assert_same_function_and_gradients(core, lstm, kind, batch_first):
    """`core` against `lstm`: outputs, final states, the gradients of input and state, and of every
    parameter both have (ours from nn.LSTM's with its gate blocks reordered; our weight_hr's from
    the sum of the two halves it stands in)."""
    for ours, theirs in zip(results(core, kind, batch_first), results(lstm, kind, batch_first), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for name, p in core.named_parameters():
        grad = getattr(lstm, name).grad
        expected = sum(grad.chunk(2, dim=1)) if name.startswith("weight_hr") else grad.view(4, -1, *grad.shape[1:])[
            [0, 1, 3, 2]].reshape(grad.shape)
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-5, msg=name)


MODES = list(itertools.product([1, 2], [False, True], [False, True], [True, False], [0, PROJECTION], INPUTS,
                               [True, False]))


@pytest.mark.parametrize("layers,bidirectional,batch_first,bias,proj_size,kind,fused", MODES)
def test_to_lstm_computes_the_cerebral_function_with_both_paths_live(layers, bidirectional, batch_first, bias,
                                                                      proj_size, kind, fused):
    torch.manual_seed(layers * 10 + bias * 2 + batch_first + proj_size)
    core = CerebralLSTM(FEATURES, HIDDEN, layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional,
                        proj_size=proj_size, stacked_state=True)
    core.fused = fused
    lstm = core.to_lstm()
    assert (lstm.hidden_size, lstm.proj_size, lstm.batch_first, lstm.bias) == \
        (2 * HIDDEN, proj_size or HIDDEN, batch_first, bias)
    assert_same_function_and_gradients(core, lstm, kind, batch_first)


@pytest.mark.parametrize("layers,bidirectional,proj_size", list(itertools.product([1, 2], [False, True], [0, PROJECTION])))
def test_from_lstm_takes_back_what_to_lstm_gives(layers, bidirectional, proj_size):
    torch.manual_seed(1)
    core = CerebralLSTM(FEATURES, HIDDEN, layers, bias=True, batch_first=True, bidirectional=bidirectional,
                        proj_size=proj_size, dropout=0.25 if layers > 1 else 0.0)
    back = CerebralLSTM.from_lstm(core.to_lstm())
    assert back.extra_repr() == core.extra_repr()
    for (name, a), (other, b) in zip(core.named_parameters(), back.named_parameters(), strict=True):
        assert name == other and torch.equal(a, b), name


def test_from_lstm_gives_the_state_in_the_lstms_form_when_asked():
    lstm = CerebralLSTM(FEATURES, HIDDEN, stacked_state=True).to_lstm()
    back = CerebralLSTM.from_lstm(lstm, stacked_state=True)
    _, (h, c) = back(torch.randn(5, 2, FEATURES))
    assert back.extra_repr().endswith("stacked_state=True") and c.shape == (1, 2, 2 * HIDDEN)


def test_the_printed_cell_is_no_lstm_and_refuses_both_ways():
    with pytest.raises(ValueError, match="CerebralLSTMPrinted cannot run as nn.LSTM"):
        CerebralLSTMPrinted(FEATURES, HIDDEN).to_lstm()
    with pytest.raises(ValueError, match="CerebralLSTMPrinted's cell is not the one nn.LSTM computes"):
        CerebralLSTMPrinted.from_lstm(CerebralLSTM(FEATURES, HIDDEN).to_lstm())


def test_to_lstm_keeps_device_and_dtype():
    lstm = CerebralLSTM(FEATURES, HIDDEN, dtype=torch.float64).to_lstm()
    assert lstm.weight_ih_l0.dtype == torch.float64 and lstm.weight_ih_l0.device.type == "cpu"


def broken(lstm, how):
    """A copy of `lstm` with its gate blocks i and f swapped, or its projection perturbed."""
    copy = nn.LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, proj_size=lstm.proj_size, bias=lstm.bias)
    copy.load_state_dict(lstm.state_dict())
    with torch.no_grad():
        if how == "gate blocks swapped":
            copy.weight_ih_l0.copy_(copy.weight_ih_l0.view(4, -1, FEATURES)[[1, 0, 2, 3]].reshape(-1, FEATURES))
        else:
            copy.weight_hr_l0[0, 0] += 0.1
    return copy


@pytest.mark.parametrize("how", ["gate blocks swapped", "projection perturbed"])
def test_the_oracle_fails_when_the_mapping_is_broken(how):
    torch.manual_seed(2)
    core = CerebralLSTM(FEATURES, HIDDEN, stacked_state=True)
    with pytest.raises(AssertionError):
        assert_same_function_and_gradients(core, broken(core.to_lstm(), how), "plain", False)


def lstm_with_projection(hidden, proj_size, halves):
    """Two layers: the first with a projection from_lstm takes, the second with `halves(rows, columns)`."""
    torch.manual_seed(3)
    lstm = nn.LSTM(FEATURES, hidden, proj_size=proj_size, num_layers=2)
    half = torch.eye(proj_size) if 2 * proj_size == hidden else torch.randn(proj_size, hidden // 2)
    with torch.no_grad():
        lstm.weight_hr_l0.copy_(torch.cat([half, half], dim=1))
        lstm.weight_hr_l1.copy_(torch.cat(halves(proj_size, hidden // 2), dim=1))
    return lstm


def equal_halves(rows, columns):
    half = torch.randn(rows, columns)
    return half, half


@pytest.mark.parametrize("lstm,cause", [
    (nn.LSTM(FEATURES, 6), "has no projection"),
    (nn.LSTM(FEATURES, 7, proj_size=2), "hidden_size 7 is odd"),
    (lstm_with_projection(6, 2, lambda r, c: (torch.randn(r, c), torch.randn(r, c))), "weight_hr_l1 is not two equal halves"),
    (lstm_with_projection(6, 3, equal_halves), "weight_hr_l1's halves are not the identity"),
    (nn.LSTM(FEATURES, 6, proj_size=4), "is wider than the 3 cells of a path"),
], ids=["no projection", "odd cells", "unequal halves", "not the identity", "too wide"])
def test_from_lstm_refuses_an_lstm_that_is_no_cerebral_lstm_in_one_line(lstm, cause):
    with pytest.raises(ValueError, match=cause) as error:
        CerebralLSTM.from_lstm(lstm)
    assert "\n" not in str(error.value) and "CerebralLSTM.to_lstm" in str(error.value)
