"""The cores check their input and state as `nn.LSTM` does, before any kernel runs: the same
exception types and, where nn.LSTM has them, its messages; an empty batch as nn.LSTM returns it;
its warning for dropout with one layer."""

import re
import warnings

import pytest
import torch
from torch import nn

from cerebral import CerebralLSTM, CerebralLSTMCell, NovoLSTM, PostBiasLSTM

# where the forward path differs: the fused path's elementwise work, and the nn.LSTM backend
SETTINGS = [("elementwise", "aten"), ("elementwise", "cpp"), ("elementwise", "seq"), ("backend", "lstm")]


def states(h_shape, c_shape, dtype=torch.float32):
    """The same state for CerebralLSTM, (h, (c_upper, c_lower)), and for nn.LSTM, (h, c)."""
    h, c = torch.zeros(h_shape, dtype=dtype), torch.zeros(c_shape, dtype=dtype)
    return (h, (c, c)), (h, c)


BAD_INPUTS = {  # module options, input shape, (our state, nn.LSTM's) or None, error, our message
    "state of a larger batch": ({}, (5, 2, 3), states((1, 3, 4), (1, 3, 4)), RuntimeError,
                                "Expected hidden[0] size (1, 2, 4), got [1, 3, 4]"),
    "state of a smaller batch": ({}, (5, 2, 3), states((1, 1, 4), (1, 1, 4)), RuntimeError,
                                 "Expected hidden[0] size (1, 2, 4), got [1, 1, 4]"),
    "two-layer state, one layer": ({}, (5, 2, 3), states((2, 2, 4), (2, 2, 4)), RuntimeError,
                                   "Expected hidden[0] size (1, 2, 4), got [2, 2, 4]"),
    "one-layer state, two layers": ({"num_layers": 2}, (5, 2, 3), states((1, 2, 4), (1, 2, 4)), RuntimeError,
                                    "Expected hidden[0] size (2, 2, 4), got [1, 2, 4]"),
    "cell state of another batch": ({}, (5, 2, 3), states((1, 2, 4), (1, 3, 4)), RuntimeError,
                                    "Expected hidden[1][0] size (1, 2, 4), got [1, 3, 4]"),
    "input of another feature size": ({}, (5, 2, 5), None, RuntimeError,
                                      "input.size(-1) must be equal to input_size. Expected 3, got 5"),
    "1-D input": ({}, (3,), None, ValueError, "Expected input to be 2D or 3D, got 1D instead"),
    "4-D input": ({}, (5, 2, 1, 3), None, ValueError, "Expected input to be 2D or 3D, got 4D instead"),
    "float32 input, float64 module": ({"dtype": torch.float64}, (5, 2, 3), None, ValueError,
                                      "RNN input dtype (torch.float32) does not match weight dtype (torch.float64)"),
    "float64 state, float32 module": ({}, (5, 2, 3), states((1, 2, 4), (1, 2, 4), torch.float64), RuntimeError,
                                      "Expected hidden[0] dtype torch.float32, the input's, got torch.float64"),
    "unbatched input, 3-D state": ({}, (5, 3), states((1, 1, 4), (1, 1, 4)), RuntimeError,
                                   "For unbatched 2-D input, hx and cx should also be 2-D but got (3-D, 3-D, 3-D)"),
    "batched input, 2-D state": ({}, (5, 2, 3), states((1, 4), (1, 4)), RuntimeError,
                                 "For batched 3-D input, hx and cx should also be 3-D but got (2-D, 2-D, 2-D)"),
}


@pytest.mark.parametrize("setting", SETTINGS, ids="=".join)
@pytest.mark.parametrize("options,shape,state,error,message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_what_nn_lstm_refuses_is_refused_with_its_error(options, shape, state, error, message, setting):
    ours, theirs = state or (None, None)
    x = torch.randn(shape)
    with pytest.raises(error):
        nn.LSTM(3, 4, **options)(x, theirs)
    core = CerebralLSTM(3, 4, **options)
    setattr(core, *setting)
    with pytest.raises(error, match=re.escape(message)):
        core(x, ours)


h0, c0 = torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)
BAD_STATE_FORMS = {  # core, state, error, message
    "no cell state": (CerebralLSTM, (h0, None), TypeError, "state must be (h, (c_upper, c_lower)) or (h, c) with c "
                      "the two side by side, of tensors, got (Tensor, NoneType)"),
    "one of the two cell states": (CerebralLSTM, (h0, (c0,)), TypeError, "got (Tensor, (Tensor))"),
    "h alone": (CerebralLSTM, h0, TypeError, "got Tensor"),
    "stacked cell state of one path's width": (CerebralLSTM, (h0, c0), RuntimeError,
                                               "Expected hidden[1] size (1, 2, 8), got [1, 2, 4]"),
    "a Cerebral state to an LSTM": (PostBiasLSTM, (h0, (c0, c0)), TypeError,
                                    "PostBiasLSTM: state must be (h, c), of tensors, got (Tensor, (Tensor, Tensor))"),
    "an LSTM cell state of another width": (NovoLSTM, (h0, torch.zeros(1, 2, 8)), RuntimeError,
                                            "Expected hidden[1] size (1, 2, 4), got [1, 2, 8]"),
}


@pytest.mark.parametrize("cls,state,error,message", BAD_STATE_FORMS.values(), ids=BAD_STATE_FORMS.keys())
def test_a_state_in_no_form_of_the_core_is_refused_in_one_clear_message(cls, state, error, message):
    with pytest.raises(error, match=re.escape(message)):
        cls(3, 4)(torch.randn(5, 2, 3), state)


@pytest.mark.parametrize("elementwise", ["aten", "cpp", "seq"])
@pytest.mark.parametrize("options", [{}, {"batch_first": True}, {"num_layers": 2, "bidirectional": True, "proj_size": 2}],
                         ids=["plain", "batch_first", "bidirectional_projected"])
@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM, NovoLSTM])
def test_an_empty_batch_gives_nn_lstm_shapes(cls, options, elementwise):
    x = torch.randn((0, 5, 3) if options.get("batch_first") else (5, 0, 3))
    expected, (h_ref, c_ref) = nn.LSTM(3, 4, **options)(x)
    core = cls(3, 4, **options)
    core.elementwise = elementwise
    output, (h, c) = core(x)
    assert output.shape == expected.shape and h.shape == h_ref.shape
    assert [t.shape for t in (c if isinstance(c, tuple) else (c,))] == [c_ref.shape] * core.num_cells
    output, state = core(x, (h, c))  # an empty state is the right one
    assert output.shape == expected.shape and state[0].shape == h_ref.shape


@pytest.mark.parametrize("options", [{"num_layers": 2}, {"num_layers": 2, "bidirectional": True, "proj_size": 2}],
                         ids=["plain", "bidirectional_projected"])
@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM, NovoLSTM])
def test_an_empty_batch_backpropagates_zeros_as_nn_lstm_does(cls, options):
    for core in (nn.LSTM(3, 4, **options), cls(3, 4, **options)):
        x = torch.randn(5, 0, 3, requires_grad=True)
        output, (h, c) = core(x)
        sum(t.sum() for t in (output, h, *(c if isinstance(c, tuple) else (c,)))).backward()
        assert x.grad.shape == x.shape
        assert all(p.grad is not None and not p.grad.any() for p in core.parameters()), type(core).__name__


def test_an_empty_batch_returns_the_stacked_state_when_asked():
    output, (h, c) = CerebralLSTM(3, 4, stacked_state=True)(torch.randn(5, 0, 3))
    assert output.shape == (5, 0, 4) and h.shape == (1, 0, 4) and c.shape == (1, 0, 8)


@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM, NovoLSTM])
def test_dropout_with_one_layer_warns_as_nn_lstm_does(cls):
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1, but got dropout=0.5 "
                                         "and num_layers=1"):
        cls(3, 4, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls(3, 4, num_layers=2, dropout=0.5)


@pytest.mark.parametrize("hidden_size", [0, -1, 2.5])
def test_the_cell_refuses_a_hidden_size_that_is_not_positive(hidden_size):
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        CerebralLSTMCell(3, hidden_size)


@pytest.mark.parametrize("shape,state,message", [
    ((1, 2, 3), None, "Expected input to be 1D or 2D, got 3D instead"),
    ((2, 5), None, "input has inconsistent input_size: got 5 expected 3"),
    ((2, 3), [(1, 4), (2, 4), (2, 4)], "for input of shape (2, 3), h of shape (2, 4) expected, got (1, 4)"),
    ((2, 3), [(2, 4), (2, 4), (1, 4)], "c_lower of shape (2, 4) expected, got (1, 4)"),
    ((2, 3), [(2, 5), (2, 4), (2, 4)], "h of shape (2, 4) expected, got (2, 5)"),
    ((3,), [(1, 4), (1, 4), (1, 4)], "for input of shape (3,), h of shape (4,) expected, got (1, 4)"),
])
def test_what_nn_lstm_cell_refuses_the_cell_refuses(shape, state, message):
    """nn.LSTMCell refuses each case with the same kind of error (its state has one cell)."""
    x, error = torch.randn(*shape), ValueError if len(shape) == 3 else RuntimeError
    with pytest.raises(error):
        nn.LSTMCell(3, 4)(x, state and (torch.randn(*state[0]), torch.randn(*state[2])))
    cerebral_state = state and (torch.randn(*state[0]), (torch.randn(*state[1]), torch.randn(*state[2])))
    with pytest.raises(error, match=re.escape(message)):
        CerebralLSTMCell(3, 4)(x, cerebral_state)


def test_under_autocast_the_state_dtype_may_differ_as_for_nn_lstm():
    core = CerebralLSTM(3, 4)
    x = torch.randn(5, 2, 3)
    state = (torch.zeros(1, 2, 4, dtype=torch.bfloat16), (torch.zeros(1, 2, 4),) * 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, _ = core(x, state)
    assert output.shape == (5, 2, 4)


def test_the_state_is_passed_by_nn_lstms_keyword_hx():
    x = torch.randn(5, 2, 3)
    core, cell = CerebralLSTM(3, 4), CerebralLSTMCell(3, 4)
    state = core(x)[1]
    assert torch.equal(core(x, hx=state)[0], core(x, state)[0])
    step = (torch.randn(2, 4), (torch.randn(2, 4), torch.randn(2, 4)))
    assert torch.equal(cell(x[0], hx=step)[0], cell(x[0], step)[0])


@pytest.mark.parametrize("hx,got", [((torch.randn(2, 4), torch.randn(2, 8)), "(Tensor, Tensor)"),
                                     ((None, (torch.randn(2, 4),) * 2), "(NoneType, (Tensor, Tensor))")])
def test_the_cell_names_its_state_form(hx, got):
    with pytest.raises(TypeError, match=re.escape(f"hx must be (h, (c_upper, c_lower)) of tensors, got {got}")):
        CerebralLSTMCell(3, 4)(torch.randn(2, 3), hx)


@pytest.mark.parametrize("options", [dict(), dict(bidirectional=True, proj_size=2, num_layers=2)])
@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("stacked", [False, True])
def test_every_state_form_it_returns_is_taken_back_as_tuple_or_list(options, unbatched, stacked):
    """The checks refuse no state the core itself gives, nor its lists in place of tuples."""
    core = CerebralLSTM(3, 4, stacked_state=stacked, **options)
    x = torch.randn(5, 3) if unbatched else torch.randn(5, 2, 3)
    state = core(x)[1]
    as_lists = [state[0], list(state[1]) if isinstance(state[1], tuple) else state[1]]
    width = (2 if options.get("bidirectional") else 1) * (options.get("proj_size") or 4)  # nn.LSTM's output
    for given in (state, as_lists):
        output, _ = core(x, given)
        assert output.shape == (*x.shape[:-1], width)
