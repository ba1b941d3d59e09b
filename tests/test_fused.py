"""The fused fast path against the equation-by-equation reference path, and against upstream."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from cerebral import CerebralLSTM
from cerebral.config import compose
from cerebral.cores import PostBiasLSTM
from cerebral.elementwise import ELEMENTWISE
from cerebral.fused import FusedLayer
from cerebral.models import build_model

CASES = [  # (input_size, hidden_size, num_layers, bias, batch_first, random initial state)
    (8, 8, 1, True, False, False), (16, 32, 2, True, True, True), (64, 64, 1, False, False, True),
    (40, 24, 2, False, True, True), (3, 64, 3, True, False, True),
]


def leaves(tree):
    return [t for t in torch.utils._pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


def outputs_and_gradients(core, x, state, fused):
    core.fused = fused
    core.zero_grad()
    inputs = [x, *leaves(state)]
    for t in inputs:
        t.grad = None
    output, final = core(x, state)
    weights = [torch.randn_like(t, generator=torch.Generator().manual_seed(i)) for i, t in enumerate([output, *leaves(final)])]
    sum((w * t).sum() for w, t in zip(weights, [output, *leaves(final)], strict=True)).backward()
    return [output, *leaves(final)], [p.grad.clone() for p in core.parameters()] + [t.grad.clone() for t in inputs]


@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM])
@pytest.mark.parametrize("input_size,hidden,layers,bias,batch_first,with_state", CASES)
def test_fused_matches_the_reference_in_outputs_and_every_gradient(cls, input_size, hidden, layers, bias, batch_first,
                                                                   with_state):
    torch.manual_seed(1000 * input_size + hidden)
    core = cls(input_size, hidden, num_layers=layers, bias=bias, batch_first=batch_first)
    with torch.no_grad():  # non-zero post-activation biases, so their gradients are exercised
        for name, p in core.named_parameters():
            if "bias_cell" in name or "bias_hidden" in name:
                p.uniform_(-0.5, 0.5)
    batch, steps = 5, 7
    x = torch.randn(*((batch, steps) if batch_first else (steps, batch)), input_size, requires_grad=True)
    state = None
    if with_state:
        def s():
            return torch.randn(layers, batch, hidden, requires_grad=True)
        state = (s(), (s(), s())) if cls is CerebralLSTM else (s(), s())
    fused = outputs_and_gradients(core, x, state, fused=True)
    reference = outputs_and_gradients(core, x, state, fused=False)
    for ours, theirs in zip(fused[0] + fused[1], reference[0] + reference[1], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


LAYOUTS = {"fixed": (3, 3, 3, 3), "packed": (3, 3, 2, 1)}  # batch sizes of the steps (rows in packed layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("paths,bias,post_biases,projection",
                         [(2, False, False, 0), (2, True, False, 0), (1, False, True, 0), (1, True, False, 0),
                          (2, True, False, 1), (1, True, True, 1)])
@pytest.mark.parametrize("elementwise", ELEMENTWISE)
def test_fused_backward_gradcheck(paths, bias, post_biases, projection, layout, elementwise, kernel_calls):
    """The backward against finite differences of the forward, in float64 (the C++ kernel's on
    std::exp and std::tanh with elementwise=cpp)."""
    torch.manual_seed(paths + 10 * projection)
    batch_sizes, inputs, hidden = LAYOUTS[layout], 3, 2
    width, output = paths * hidden, projection or hidden

    def make(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    args = (make(sum(batch_sizes), inputs), make(4 * width, inputs), make(4 * width) if bias else None,
            make(4 * width, output), make(batch_sizes[0], output), make(batch_sizes[0], width),
            make(width) if post_biases else None, make(hidden) if post_biases else None,
            make(projection, hidden) if projection else None, batch_sizes, None, elementwise)
    assert torch.autograd.gradcheck(FusedLayer.apply, args)
    assert ("gates_forward" in kernel_calls and "gates_backward" in kernel_calls) == (elementwise == "cpp")
    assert ("layer_forward" in kernel_calls and "layer_backward" in kernel_calls) == (elementwise == "seq")


def test_the_paper_models_use_the_fused_path():
    for name in ("stacked_lstm", "cerebral_lstm"):
        assert build_model(compose(f"model={name}", "model.state_size=8").model, 5).core.fused


def test_same_outputs_as_the_upstream_package_with_its_weights():
    upstream = pytest.importorskip("cerebral_lstm")
    torch.manual_seed(0)
    theirs = upstream.CerebralLSTM(6, 5, num_layers=2)
    with torch.no_grad():
        for cell in theirs.layers:
            for name, p in cell.named_parameters():
                if name.startswith("b_"):
                    p.uniform_(-0.3, 0.3)
    ours = CerebralLSTM.from_upstream(theirs)
    x = torch.randn(7, 3, 6)
    expected, states = theirs(x)
    output, (h, (c_upper, c_lower)) = ours(x)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    for k, (h_k, (uc, lc)) in enumerate(states):
        torch.testing.assert_close(h[k], h_k, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c_upper[k], uc, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c_lower[k], lc, rtol=1e-5, atol=1e-6)
    back = ours.to_upstream()  # and back: the same parameters, bit for bit
    for (name, a), b in zip(theirs.named_parameters(), back.parameters(), strict=True):
        assert torch.equal(a, b), name
    stacked = CerebralLSTM.from_upstream(theirs, stacked_state=True)(x)[1][1]
    assert torch.equal(stacked, torch.cat([c_upper, c_lower], dim=-1))


def test_to_upstream_refuses_what_the_package_cannot_take():
    pytest.importorskip("cerebral_lstm")
    with pytest.raises(ValueError, match="time-major input in one direction, without projection"):
        CerebralLSTM(3, 4, batch_first=True).to_upstream()
    with pytest.raises(ValueError, match="bidirectional=False"):
        CerebralLSTM(3, 4, bidirectional=True).to_upstream()
    with pytest.raises(ValueError, match="proj_size=0"):
        CerebralLSTM(3, 4, proj_size=2).to_upstream()
    torch.manual_seed(2)
    ours = CerebralLSTM(3, 4, num_layers=2, bias=False)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(ours.to_upstream()(x)[0], ours(x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("elementwise", ["aten", "seq"])
@pytest.mark.parametrize("mode", ["bidirectional", "packed bidirectional projected"])
@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM])
def test_fused_core_gradcheck_in_every_mode(cls, mode, elementwise):
    """The whole core on the fused path: the reverse direction's reordering of each sequence's
    steps, the packed layout's final states and the projection, through float64 gradcheck."""
    torch.manual_seed(5)
    core = cls(3, 3, num_layers=2, bidirectional=True, proj_size=2 if "projected" in mode else 0, dtype=torch.float64)
    core.elementwise = elementwise
    assert core.fused
    x = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 1])
    names, weights = zip(*core.named_parameters(), strict=True)

    def outputs(x, *params):
        data = pack_padded_sequence(x, lengths, enforce_sorted=False) if "packed" in mode else x
        output, (h, *_) = torch.func.functional_call(core, dict(zip(names, params, strict=True)), (data,))
        return (output.data if "packed" in mode else output), h

    assert torch.autograd.gradcheck(outputs, (x, *weights))
