"""The study variants: the Cerebral LSTM with the cell equation as printed in Section 4, NovoLSTM,
tied Cerebral paths (Section 4.1), the parameter-matched single LSTM, and their config checks.
Cores are compared with literal float64 transcriptions of their equations, written here."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_nested, assert_same_gradients, layer_bias, random_cerebral_state

from cerebral import CerebralLSTM
from cerebral.config import ConfigError, check_config, compose
from cerebral.cores import CerebralLSTMPrinted, NovoLSTM
from cerebral.models import build_model, parameter_count

sigma, tanh = torch.sigmoid, torch.tanh


@pytest.fixture
def one_thread():
    """F.layer_norm on tiny tensors is ~8x slower with 2 intra-op threads on a loaded CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --- The Cerebral LSTM with the printed cell equation -------------------------------------------

def reference_printed_cerebral(core, x, state):
    """Section 4 as printed, one gate at a time, over time and layers (time-major x):
    U_c = U_f * U_Ctmp + U_i * U_Ctmp, L_c = L_f * L_Ctmp + L_i * L_Ctmp,
    h = U_o * tanh(U_c) + L_o * tanh(L_c). The cell states passed in are never read."""
    h0, _unused_cells = state
    names = ["ui", "li", "uf", "lf", "uo", "lo", "uc", "lc"]
    hs, cus, cls = [], [], []
    for k in range(core.num_layers):
        Wx = dict(zip(names, getattr(core, f"weight_ih_l{k}").chunk(8), strict=True))
        Wh = dict(zip(names, getattr(core, f"weight_hh_l{k}").chunk(8), strict=True))
        b = dict(zip(names, layer_bias(core, k).chunk(8), strict=True)) if core.bias else dict.fromkeys(names, 0.0)
        def a(g, x_t, h, Wx=Wx, Wh=Wh, b=b):
            return x_t @ Wx[g].T + h @ Wh[g].T + b[g]
        h = h0[k]
        outputs = []
        for x_t in x:
            U_i, U_f, U_o, U_Ctmp = sigma(a("ui", x_t, h)), sigma(a("uf", x_t, h)), sigma(a("uo", x_t, h)), tanh(a("uc", x_t, h))
            L_i, L_f, L_o, L_Ctmp = sigma(a("li", x_t, h)), sigma(a("lf", x_t, h)), sigma(a("lo", x_t, h)), tanh(a("lc", x_t, h))
            U_c = U_f * U_Ctmp + U_i * U_Ctmp
            L_c = L_f * L_Ctmp + L_i * L_Ctmp
            h = U_o * tanh(U_c) + L_o * tanh(L_c)
            outputs.append(h)
        x = torch.stack(outputs)
        hs.append(h), cus.append(U_c), cls.append(L_c)
    return x, (torch.stack(hs), (torch.stack(cus), torch.stack(cls)))


@pytest.mark.parametrize("bias", [True, False])
def test_printed_cerebral_layer_matches_the_printed_equations(float64, bias):
    torch.manual_seed(10)
    core = CerebralLSTMPrinted(5, 6, num_layers=2, bias=bias, batch_first=True)
    x = torch.randn(3, 4, 5)  # batch-first
    state = random_cerebral_state(2, 3, 6)
    output, final = core(x, state)
    expected_output, expected_final = reference_printed_cerebral(core, x.transpose(0, 1), state)
    assert_close_nested(output.transpose(0, 1), expected_output)
    assert_close_nested(final, expected_final)
    # and it is not the recurrent Cerebral LSTM with the same weights
    recurrent = CerebralLSTM(5, 6, num_layers=2, bias=bias, batch_first=True)
    recurrent.load_state_dict(core.state_dict())
    assert not torch.allclose(recurrent(x, state)[0], output)


def test_printed_cerebral_ignores_the_initial_cell_state(float64):
    torch.manual_seed(11)
    x = torch.randn(2, 5, 4)
    h0, cells_a = random_cerebral_state(2, 2, 3)
    cells_b = (torch.randn(2, 2, 3), torch.randn(2, 2, 3))
    printed = CerebralLSTMPrinted(4, 3, num_layers=2, batch_first=True)
    out_a, (h_a, c_a) = printed(x, (h0, cells_a))
    out_b, (h_b, c_b) = printed(x, (h0, cells_b))
    assert torch.equal(out_a, out_b) and torch.equal(h_a, h_b)
    assert torch.equal(c_a[0], c_b[0]) and torch.equal(c_a[1], c_b[1])
    # the initial hidden state still matters
    assert not torch.allclose(printed(x, (torch.randn(2, 2, 3), cells_a))[0], out_a)
    # the Cerebral LSTM with the same weights carries its cell state over
    recurrent = CerebralLSTM(4, 3, num_layers=2, batch_first=True)
    recurrent.load_state_dict(printed.state_dict())
    assert not torch.allclose(recurrent(x, (h0, cells_a))[0], recurrent(x, (h0, cells_b))[0])


@pytest.mark.parametrize("bias", [True, False])
def test_printed_cerebral_gradients_are_those_of_the_printed_equations(float64, bias):
    torch.manual_seed(12)
    core = CerebralLSTMPrinted(3, 4, num_layers=2, bias=bias, batch_first=True)
    x = torch.randn(2, 5, 3, requires_grad=True)
    h0, (cu, cl) = random_cerebral_state(2, 2, 4)
    h0.requires_grad_()

    def run(x, h0, *params):
        out, (h, (U_c, L_c)) = core(x, (h0, (cu, cl)))
        return out.transpose(0, 1), h, U_c, L_c

    def printed(x, h0, *params):
        out, (h, (U_c, L_c)) = reference_printed_cerebral(core, x.transpose(0, 1), (h0, (cu, cl)))
        return out, h, U_c, L_c

    assert_same_gradients(run, printed, (x, h0, *core.parameters()))


# --- NovoLSTM ------------------------------------------------------------------------------------

def layer_norm_by_hand(x, weight, bias):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased
    return (x - mean) / torch.sqrt(var + 1e-5) * weight + bias


def softmax_by_hand(x):
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def reference_novo_lstm(core, x, state):
    """NovoLSTM, one gate at a time (time-major x): i = LayerNorm(sigma(a_i)) * softmax(a_i'),
    c = sigma(a_f) * c(t-1) + i * tanh(a_g), h = sigma(a_o) * tanh(c); blocks i, i', f, o, g."""
    h0, c0 = state
    hs, cs = [], []
    for k in range(core.num_layers):
        Wx = getattr(core, f"weight_ih_l{k}").chunk(5)
        Wh = getattr(core, f"weight_hh_l{k}").chunk(5)
        b = layer_bias(core, k).chunk(5) if core.bias else [0.0] * 5
        ln_w, ln_b = getattr(core, f"norm_weight_l{k}"), getattr(core, f"norm_bias_l{k}")
        h, c = h0[k], c0[k]
        outputs = []
        for x_t in x:
            a = [x_t @ Wx[j].T + h @ Wh[j].T + b[j] for j in range(5)]
            i = layer_norm_by_hand(sigma(a[0]), ln_w, ln_b) * softmax_by_hand(a[1])
            f, o, g = sigma(a[2]), sigma(a[3]), tanh(a[4])
            c = f * c + i * g
            h = o * tanh(c)
            outputs.append(h)
        x = torch.stack(outputs)
        hs.append(h), cs.append(c)
    return x, (torch.stack(hs), torch.stack(cs))


def test_novo_lstm_matches_its_equations(float64):
    torch.manual_seed(13)
    core = NovoLSTM(5, 4, num_layers=2, bias=True, batch_first=True)
    with torch.no_grad():  # LayerNorm away from its identity start, so its scale and shift count
        for k in range(2):
            getattr(core, f"norm_weight_l{k}").uniform_(0.5, 1.5)
            getattr(core, f"norm_bias_l{k}").uniform_(-0.5, 0.5)
    x = torch.randn(3, 6, 5)
    state = (torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    output, final = core(x, state)
    expected_output, expected_final = reference_novo_lstm(core, x.transpose(0, 1), state)
    assert output.shape == (3, 6, 4) and final[0].shape == final[1].shape == (2, 3, 4)
    assert_close_nested(output.transpose(0, 1), expected_output)
    assert_close_nested(final, expected_final)
    assert core.weight_ih_l0.shape == (20, 5) and core.weight_hh_l1.shape == (20, 4)


def test_novo_lstm_gradients_are_those_of_its_equations(float64, one_thread):
    torch.manual_seed(14)
    core = NovoLSTM(3, 4, num_layers=2, bias=True, batch_first=True)
    with torch.no_grad():  # LayerNorm away from its identity start, so its scale and shift count
        for k in range(2):
            getattr(core, f"norm_weight_l{k}").uniform_(0.5, 1.5)
            getattr(core, f"norm_bias_l{k}").uniform_(-0.5, 0.5)
    x = torch.randn(2, 5, 3, requires_grad=True)
    h0, c0 = torch.randn(2, 2, 4, requires_grad=True), torch.randn(2, 2, 4, requires_grad=True)

    def run(x, h0, c0, *params):
        out, (h, c) = core(x, (h0, c0))
        return out.transpose(0, 1), h, c

    def equations(x, h0, c0, *params):
        out, (h, c) = reference_novo_lstm(core, x.transpose(0, 1), (h0, c0))
        return out, h, c

    assert_same_gradients(run, equations, (x, h0, c0, *core.parameters()))


def test_novo_lstm_layer_norm_starts_as_identity_and_learns():
    torch.manual_seed(15)
    core = NovoLSTM(5, 4, num_layers=2)
    for k in range(2):
        assert torch.equal(getattr(core, f"norm_weight_l{k}"), torch.ones(4))
        assert torch.equal(getattr(core, f"norm_bias_l{k}"), torch.zeros(4))
    output, (h, c) = core(torch.randn(6, 3, 5))
    (output.square().sum() + c.sum()).backward()
    for k in range(2):
        for name in (f"norm_weight_l{k}", f"norm_bias_l{k}"):
            grad = getattr(core, name).grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_novo_lstm_model_config_initialisation():
    torch.manual_seed(16)
    model = build_model(compose("model=novo_lstm", "model.state_size=8").model, 5)
    assert isinstance(model.core, NovoLSTM)
    names = {n for n, _ in model.core.named_parameters()}
    assert not any(n.startswith(("bias_ih", "bias_hh")) for n in names)
    assert {"norm_weight_l0", "norm_bias_l0"} <= names
    assert torch.equal(model.core.norm_weight_l0, torch.ones(8))  # not zeroed or redrawn by tf_xavier
    assert torch.equal(model.core.norm_bias_l0, torch.zeros(8))
    bound = math.sqrt(6 / (5 * (8 + 8)))
    for name in ("weight_ih_l0", "weight_hh_l0"):
        w = getattr(model.core, name)
        assert w.shape == (5 * 8, 8)
        assert 0.9 * bound < w.abs().max() <= bound, name


# --- Tied Cerebral paths ---------------------------------------------------------------------------

def paths(p, hidden):
    """(upper, lower) rows of a Cerebral parameter: gate blocks i, f, o, g, each upper then lower."""
    by_path = p.detach().view(4, 2, hidden, -1)
    return by_path[:, 0], by_path[:, 1]


def train_a_few_steps(model, vocab, steps=3):
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.05, initial_accumulator_value=0.1)
    for _ in range(steps):
        tokens = torch.randint(0, vocab, (4, 7))
        targets = torch.randint(0, vocab, (4, 7))
        loss = F.cross_entropy(model(tokens)[0].reshape(-1, vocab), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_tie_init_ties_the_paths_of_the_same_draw():
    torch.manual_seed(17)
    tied = build_model(compose("model=cerebral_lstm_tied", "model.state_size=8").model, 5)
    torch.manual_seed(17)
    untied = build_model(compose("model=cerebral_lstm", "model.state_size=8").model, 5)
    core_names = {n for n, _ in tied.core.named_parameters()}
    assert core_names == {"weight_ih_l0", "weight_hh_l0"}
    for name, p in tied.named_parameters():
        q = dict(untied.named_parameters())[name]
        if name.startswith("core."):
            upper, lower = paths(p, 8)
            untied_upper, untied_lower = paths(q, 8)
            assert torch.equal(upper, lower), name
            assert torch.equal(upper, untied_upper), name
            assert not torch.equal(untied_upper, untied_lower), name
        else:
            assert torch.equal(p, q), name


def test_tied_paths_stay_equal_under_training():
    torch.manual_seed(18)
    tied = build_model(compose("model=cerebral_lstm_tied", "model.state_size=8").model, 5)
    torch.manual_seed(18)
    untied = build_model(compose("model=cerebral_lstm", "model.state_size=8").model, 5)
    before = {n: p.detach().clone() for n, p in tied.core.named_parameters()}
    torch.manual_seed(19)
    train_a_few_steps(tied, 5)
    torch.manual_seed(19)
    train_a_few_steps(untied, 5)
    for name, p in tied.core.named_parameters():
        assert not torch.equal(p, before[name]), name  # it did train
        upper, lower = paths(p, 8)
        assert torch.equal(upper, lower), name
        untied_upper, untied_lower = paths(getattr(untied.core, name), 8)
        assert not torch.allclose(untied_upper, untied_lower), name


@pytest.mark.parametrize("gate_bias", [True, False])
def test_printed_cerebral_supports_tied_paths(gate_bias):
    torch.manual_seed(20)
    cfg = compose("model=cerebral_lstm_printed", "model.state_size=8", "model.tie_init=true",
                  f"model.gate_bias={str(gate_bias).lower()}", "model.init=torch")
    check_config(cfg)
    model = build_model(cfg.model, 5)
    assert type(model.core) is CerebralLSTMPrinted
    names = {n for n, _ in model.core.named_parameters()}
    assert ("bias_ih_l0" in names) == gate_bias
    for name, p in model.core.named_parameters():
        upper, lower = paths(p, 8)
        assert torch.equal(upper, lower) and upper.abs().sum() > 0, name
    train_a_few_steps(model, 5, steps=2)
    for name, p in model.core.named_parameters():
        upper, lower = paths(p, 8)
        assert torch.equal(upper, lower), name
    # tie_paths_ itself, on a bare core
    core = CerebralLSTMPrinted(3, 4, num_layers=2, bias=True)
    assert not torch.equal(*paths(core.weight_hh_l1, 4))
    upper_before = paths(core.weight_ih_l0, 4)[0].clone()
    core.tie_paths_()
    for name, p in core.named_parameters():
        assert torch.equal(*paths(p, 4)), name
    assert torch.equal(paths(core.weight_ih_l0, 4)[0], upper_before)


# --- The parameter-matched single LSTM -------------------------------------------------------------

def test_single_lstm_matched_has_the_cerebral_lstm_parameter_count():
    vocab = 89  # Simpsons
    with torch.device("meta"):
        matched = build_model(compose("model=single_lstm_matched").model, vocab)
        cerebral = build_model(compose("model=cerebral_lstm").model, vocab)
        single = build_model(compose("model=single_lstm").model, vocab)
    n_matched, n_cerebral = parameter_count(matched), parameter_count(cerebral)
    H = matched.core.hidden_size
    # embedding + 4 gates over [x, h] (no gate biases) + head with bias
    assert n_matched == vocab * H + 4 * H * (H + H) + H * vocab + vocab
    assert n_cerebral == vocab * 512 + 8 * 512 * (512 + 512) + 512 * vocab + vocab
    assert abs(n_matched - n_cerebral) <= 0.01 * n_cerebral
    assert parameter_count(single) < 0.6 * n_cerebral  # the plain single LSTM is not matched


# --- Config checks ------------------------------------------------------------------------------

def test_config_refuses_tie_init_without_a_cerebral_core():
    check_config(compose("model=single_lstm"))
    check_config(compose("model=cerebral_lstm_tied"))
    with pytest.raises(ConfigError, match=r"model\.tie_init") as error:
        check_config(compose("model=single_lstm", "model.tie_init=true"))
    assert "model.post_bias" not in str(error.value)
    with pytest.raises(ConfigError, match=r"model\.tie_init"):
        check_config(compose("model=novo_lstm", "model.tie_init=true"))


def test_config_refuses_post_bias_without_the_lstm_core():
    check_config(compose("model=novo_lstm"))
    check_config(compose("model=stacked_lstm"))
    with pytest.raises(ConfigError, match=r"model\.post_bias") as error:
        check_config(compose("model=novo_lstm", "model.post_bias=true"))
    assert "model.tie_init" not in str(error.value)
    with pytest.raises(ConfigError, match=r"model\.post_bias"):
        check_config(compose("model=cerebral_lstm", "model.post_bias=true"))
