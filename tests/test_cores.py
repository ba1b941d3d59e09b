"""Each core against a literal float64 transcription of its equations, and gradcheck."""

import pytest
import torch
from conftest import assert_close_nested, assert_same_gradients, layer_bias, random_cerebral_state
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cerebral import CerebralLSTM, CerebralLSTMCell
from cerebral.cores import PostBiasLSTM

pytestmark = pytest.mark.usefixtures("float64")
sigma, tanh = torch.sigmoid, torch.tanh


def readme_cerebral_step(x, h, U_c, L_c, W, b):
    """The upstream README's equations, one line each, with W_g . [h(t-1), x(t)] + b_g per gate.
    W[g] is [hidden, hidden + input] and b[g] is [hidden] for g in uf ui uc uo lf li lc lo."""
    hx = torch.cat([h, x], dim=-1)
    U_f = sigma(hx @ W["uf"].T + b["uf"])
    U_i = sigma(hx @ W["ui"].T + b["ui"])
    U_Ctmp = tanh(hx @ W["uc"].T + b["uc"])
    U_c = U_f * U_c + U_i * U_Ctmp
    U_o = sigma(hx @ W["uo"].T + b["uo"])
    L_f = sigma(hx @ W["lf"].T + b["lf"])
    L_i = sigma(hx @ W["li"].T + b["li"])
    L_Ctmp = tanh(hx @ W["lc"].T + b["lc"])
    L_c = L_f * L_c + L_i * L_Ctmp
    L_o = sigma(hx @ W["lo"].T + b["lo"])
    h = U_o * tanh(U_c) + L_o * tanh(L_c)
    return h, U_c, L_c


def readme_weights(w_ih, w_hh, bias):
    """Split our stacked parameters into the README's per-gate W and b (order documented in
    `cerebral_update`: gate blocks i, f, o, c, each upper then lower)."""
    names = ["ui", "li", "uf", "lf", "uo", "lo", "uc", "lc"]
    W = dict(zip(names, torch.cat([w_hh, w_ih], dim=1).chunk(8), strict=True))
    b = dict(zip(names, bias.chunk(8) if bias is not None else [0.0] * 8, strict=True))
    return W, b


def reference_cerebral(core, x, state):
    """Run the README step over time and layers (time-major input)."""
    h0, (cu0, cl0) = state
    hs, cus, cls = [], [], []
    for k in range(core.num_layers):
        W, b = readme_weights(getattr(core, f"weight_ih_l{k}"), getattr(core, f"weight_hh_l{k}"),
                              layer_bias(core, k))
        h, cu, cl = h0[k], cu0[k], cl0[k]
        outputs = []
        for x_t in x:
            h, cu, cl = readme_cerebral_step(x_t, h, cu, cl, W, b)
            outputs.append(h)
        x = torch.stack(outputs)
        hs.append(h), cus.append(cu), cls.append(cl)
    return x, (torch.stack(hs), (torch.stack(cus), torch.stack(cls)))


@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_the_readme_equations(bias):
    torch.manual_seed(0)
    cell = CerebralLSTMCell(5, 7, bias=bias)
    x, h, cu, cl = torch.randn(3, 5), torch.randn(3, 7), torch.randn(3, 7), torch.randn(3, 7)
    W, b = readme_weights(cell.weight_ih, cell.weight_hh,
                          cell.bias_ih + cell.bias_hh if bias else None)
    h_ref, cu_ref, cl_ref = readme_cerebral_step(x, h, cu, cl, W, b)
    assert_close_nested(cell(x, (h, (cu, cl))), (h_ref, (cu_ref, cl_ref)))


def test_cell_starts_from_zeros_and_its_gradients_are_the_readme_equations():
    torch.manual_seed(1)
    cell = CerebralLSTMCell(4, 3)
    x = torch.randn(2, 4)
    zeros = torch.zeros(2, 3)
    assert_close_nested(cell(x), cell(x, (zeros, (zeros, zeros))))
    x, h, cu, cl = (torch.randn(2, n, requires_grad=True) for n in (4, 3, 3, 3))
    params = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)

    def run(x, h, cu, cl, *params):
        h, (cu, cl) = cell(x, (h, (cu, cl)))
        return h, cu, cl

    def readme(x, h, cu, cl, w_ih, w_hh, b_ih, b_hh):
        return readme_cerebral_step(x, h, cu, cl, *readme_weights(w_ih, w_hh, b_ih + b_hh))

    assert_same_gradients(run, readme, (x, h, cu, cl, *params))


@pytest.mark.parametrize("layers,bias,batch_first,input_size", [
    (1, True, False, 5), (2, False, True, 5), (2, True, False, 7), (3, True, True, 4)])
def test_cerebral_lstm_matches_the_readme_equations(layers, bias, batch_first, input_size):
    torch.manual_seed(2)
    core = CerebralLSTM(input_size, 6, num_layers=layers, bias=bias, batch_first=batch_first)
    x = torch.randn(4, 3, input_size)  # time-major for the reference
    state = random_cerebral_state(layers, 3, 6)
    output, final = core(x.transpose(0, 1) if batch_first else x, state)
    expected_output, expected_final = reference_cerebral(core, x, state)
    assert_close_nested(output.transpose(0, 1) if batch_first else output, expected_output)
    assert_close_nested(final, expected_final)


def reference_cerebral_sequence(core, x, h0, cu0, cl0):
    """One sequence x (T, input) alone through every layer and direction, the README step by step,
    then the projection h = W_hr h where the core has one; the reverse direction reads x last to
    first. Returns the output (T, D*R) and the final h, c_upper, c_lower (each L*D rows)."""
    finals = []
    for k in range(core.num_layers):
        outputs = []
        for d, suffix in enumerate(("", "_reverse")[: core.num_directions]):
            key, row = f"{k}{suffix}", k * core.num_directions + d
            W, b = readme_weights(getattr(core, f"weight_ih_l{key}"), getattr(core, f"weight_hh_l{key}"),
                                  layer_bias(core, key))
            h, cu, cl = h0[row], cu0[row], cl0[row]
            output = []
            for x_t in x.flip(0) if suffix else x:
                h, cu, cl = readme_cerebral_step(x_t, h, cu, cl, W, b)
                if core.proj_size:
                    h = getattr(core, f"weight_hr_l{key}") @ h
                output.append(h)
            output = torch.stack(output)
            outputs.append(output.flip(0) if suffix else output)
            finals.append((h, cu, cl))
        x = torch.cat(outputs, dim=-1)
    h, cu, cl = (torch.stack(f) for f in zip(*finals, strict=True))
    return x, h, cu, cl


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("layers,bidirectional,proj_size,batch_first", [
    (1, True, 0, False), (2, True, 3, True), (2, False, 3, False), (1, False, 2, True)])
def test_cerebral_lstm_matches_the_readme_equations_sequence_by_sequence_in_every_mode(layers, bidirectional, proj_size,
                                                                                      batch_first, fused):
    """Packed (unsorted, lengths down to 1), padded and unbatched input against each sequence run
    alone through the float64 transcription."""
    torch.manual_seed(7)
    core = CerebralLSTM(4, 5, layers, bidirectional=bidirectional, proj_size=proj_size, batch_first=batch_first)
    core.fused = fused
    rows = layers * core.num_directions
    lengths = [3, 6, 1, 4]
    x = torch.randn(6, len(lengths), 4)  # time-major; step t of sequence j is x[t, j]
    h0, cu0, cl0 = torch.randn(rows, 4, proj_size or 5), torch.randn(rows, 4, 5), torch.randn(rows, 4, 5)
    expected = [reference_cerebral_sequence(core, x[:n, j], h0[:, j], cu0[:, j], cl0[:, j])
                for j, n in enumerate(lengths)]

    packed = pack_padded_sequence(x.transpose(0, 1) if batch_first else x, torch.tensor(lengths), batch_first,
                                  enforce_sorted=False)
    output, (h, (cu, cl)) = core(packed, (h0, (cu0, cl0)))
    output, output_lengths = pad_packed_sequence(output)
    assert output_lengths.tolist() == lengths
    for j, (n, (out_j, h_j, cu_j, cl_j)) in enumerate(zip(lengths, expected, strict=True)):
        assert_close_nested((output[:n, j], h[:, j], cu[:, j], cl[:, j]), (out_j, h_j, cu_j, cl_j))

    n = max(lengths)
    longest = lengths.index(n)
    padded_output, (h, (cu, cl)) = core(x.transpose(0, 1) if batch_first else x, (h0, (cu0, cl0)))
    padded_output = padded_output.transpose(0, 1) if batch_first else padded_output
    assert_close_nested((padded_output[:, longest], h[:, longest], cu[:, longest], cl[:, longest]), expected[longest])
    unbatched = core(x[:, longest], (h0[:, longest], (cu0[:, longest], cl0[:, longest])))
    assert_close_nested(unbatched, (expected[longest][0], (expected[longest][1], expected[longest][2:])))


def test_cerebral_lstm_zero_state_and_unbatched_input():
    torch.manual_seed(3)
    core = CerebralLSTM(4, 5, num_layers=2)
    x = torch.randn(6, 4)
    output, (h, (cu, cl)) = core(x)
    batched_output, (bh, (bcu, bcl)) = core(x.unsqueeze(1))
    assert output.shape == (6, 5) and h.shape == cu.shape == cl.shape == (2, 5)
    assert_close_nested((output, h, cu, cl), (batched_output[:, 0], bh[:, 0], bcu[:, 0], bcl[:, 0]))
    state = random_cerebral_state(2, 1, 5)
    unbatched_state = (state[0][:, 0], (state[1][0][:, 0], state[1][1][:, 0]))
    assert_close_nested(core(x, unbatched_state)[0], core(x.unsqueeze(1), state)[0][:, 0])


def test_cerebral_lstm_gradcheck_through_two_layers_and_the_state():
    torch.manual_seed(4)
    core = CerebralLSTM(3, 2, num_layers=2, batch_first=True)
    x = torch.randn(2, 3, 3, requires_grad=True)
    h, (cu, cl) = random_cerebral_state(2, 2, 2)
    inputs = (x, h.requires_grad_(), cu.requires_grad_(), cl.requires_grad_(), *core.parameters())

    def run(x, h, cu, cl, *params):
        names = [n for n, _ in core.named_parameters()]
        out, (hn, (cun, cln)) = torch.func.functional_call(core, dict(zip(names, params, strict=True)), (x, (h, (cu, cl))))
        return out, hn, cun, cln

    assert torch.autograd.gradcheck(run, inputs)


def test_cerebral_lstm_follows_nn_lstm_conventions():
    core = CerebralLSTM(10, 20, num_layers=2)
    lstm = nn.LSTM(10, 20, num_layers=2)
    ours = {n: p.shape for n, p in core.named_parameters()}
    theirs = {n: p.shape for n, p in lstm.named_parameters()}
    assert ours.keys() == theirs.keys()
    assert all(ours[n][0] == 2 * theirs[n][0] and ours[n][1:] == theirs[n][1:] for n in ours)
    bound = 1 / 20 ** 0.5
    for p in core.parameters():
        assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound
    assert not any("bias" in n for n, _ in CerebralLSTM(10, 20, bias=False).named_parameters())


def test_dropout_acts_between_layers_in_training_only():
    torch.manual_seed(5)
    core = CerebralLSTM(4, 8, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 4)
    core.eval()
    assert_close_nested(core(x), core(x))
    core.train()
    assert not torch.equal(core(x)[0], core(x)[0])
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):  # as nn.LSTM
        core_one_layer = CerebralLSTM(4, 8, num_layers=1, dropout=0.5).train()
    assert torch.equal(core_one_layer(x)[0], core_one_layer(x)[0])


def test_an_empty_sequence_is_refused():
    with pytest.raises(ValueError, match="no time steps"):
        CerebralLSTM(3, 4, batch_first=True)(torch.zeros(2, 0, 3))


@pytest.mark.parametrize("kwargs", [dict(hidden_size=0), dict(hidden_size=2.5), dict(num_layers=0), dict(dropout=1.0)])
def test_invalid_constructor_arguments_are_refused(kwargs):
    args = dict(input_size=3, hidden_size=4) | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CerebralLSTM(**args)


def reference_post_bias_lstm(core, x, state):
    """The two-stacked TF1 LSTM (docs/PROTOCOL.md, P7), one gate at a time."""
    h0, c0 = state
    hs, cs = [], []
    for k in range(core.num_layers):
        Wx = getattr(core, f"weight_ih_l{k}").chunk(4)
        Wh = getattr(core, f"weight_hh_l{k}").chunk(4)
        b = layer_bias(core, k).chunk(4) if core.bias else [0.0] * 4
        b_c, b_h = getattr(core, f"bias_cell_l{k}"), getattr(core, f"bias_hidden_l{k}")
        h, c = h0[k], c0[k]
        outputs = []
        for x_t in x:
            i = sigma(x_t @ Wx[0].T + h @ Wh[0].T + b[0])
            f = sigma(x_t @ Wx[1].T + h @ Wh[1].T + b[1])
            o = sigma(x_t @ Wx[2].T + h @ Wh[2].T + b[2])
            g = tanh(x_t @ Wx[3].T + h @ Wh[3].T + b[3])
            c = f * c + i * g + b_c
            h = o * tanh(c) + b_h
            outputs.append(h)
        x = torch.stack(outputs)
        hs.append(h), cs.append(c)
    return x, (torch.stack(hs), torch.stack(cs))


@pytest.mark.parametrize("layers,bias", [(2, False), (1, True)])
def test_post_bias_lstm_matches_its_equations(layers, bias):
    torch.manual_seed(6)
    core = PostBiasLSTM(5, 4, num_layers=layers, bias=bias)
    x = torch.randn(3, 2, 5)
    state = (torch.randn(layers, 2, 4), torch.randn(layers, 2, 4))
    assert_close_nested(core(x, state), reference_post_bias_lstm(core, x, state))
    names = [n for n, _ in core.named_parameters()]
    assert {f"bias_cell_l{k}" for k in range(layers)} <= set(names)


def test_post_bias_lstm_without_post_biases_is_nn_lstm():
    torch.manual_seed(7)
    core = PostBiasLSTM(5, 4, num_layers=2, bias=True, batch_first=True)
    lstm = nn.LSTM(5, 4, num_layers=2, bias=True, batch_first=True)
    with torch.no_grad():  # nn.LSTM's gate blocks are i, f, g, o; ours i, f, o, g
        for n, p in lstm.named_parameters():
            i, f, g, o = p.chunk(4)
            getattr(core, n).copy_(torch.cat([i, f, o, g]))
        for k in range(2):
            getattr(core, f"bias_cell_l{k}").zero_()
            getattr(core, f"bias_hidden_l{k}").zero_()
    x = torch.randn(2, 6, 5)
    assert_close_nested(core(x), lstm(x))


def test_post_bias_lstm_gradcheck():
    torch.manual_seed(8)
    core = PostBiasLSTM(3, 2, num_layers=2, bias=False)
    x = torch.randn(3, 2, 3, requires_grad=True)
    names = [n for n, _ in core.named_parameters()]
    def run(x, *params):
        return torch.func.functional_call(core, dict(zip(names, params, strict=True)), (x,))[0]
    assert torch.autograd.gradcheck(run, (x, *core.parameters()))


def test_single_lstm_core_is_the_tf1_lstm_without_biases():
    """docs/PROTOCOL.md, P6: i, f, o = sigmoid(x U + h W), g = tanh(x U + h W), no biases."""
    torch.manual_seed(9)
    lstm = nn.LSTM(5, 4, bias=False)
    x = torch.randn(3, 2, 5)
    U = lstm.weight_ih_l0.chunk(4)  # nn.LSTM's order: i, f, g, o
    W = lstm.weight_hh_l0.chunk(4)
    h, c = torch.zeros(2, 4), torch.zeros(2, 4)
    outputs = []
    for x_t in x:
        i = sigma(x_t @ U[0].T + h @ W[0].T)
        f = sigma(x_t @ U[1].T + h @ W[1].T)
        o = sigma(x_t @ U[3].T + h @ W[3].T)
        g = tanh(x_t @ U[2].T + h @ W[2].T)
        c = f * c + i * g
        h = o * tanh(c)
        outputs.append(h)
    assert_close_nested(lstm(x)[0], torch.stack(outputs))
