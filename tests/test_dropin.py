"""`CerebralLSTM` in place of `nn.LSTM`: its constructor arguments, device and dtype, the stacked
state form for nn.LSTM idioms, and an install that needs torch alone."""

import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from torch import nn

from cerebral import CerebralLSTM, CerebralLSTMCell, NovoLSTM, PostBiasLSTM


@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM, NovoLSTM])
def test_every_core_takes_nn_lstm_arguments_with_dtype_and_device(cls):
    core = cls(input_size=3, hidden_size=4, num_layers=2, bias=False, batch_first=True, dropout=0.0,
               bidirectional=False, proj_size=0, device="cpu", dtype=torch.float64)
    assert {p.dtype for p in core.parameters()} == {torch.float64}
    assert {p.device.type for p in core.parameters()} == {"cpu"}
    core.flatten_parameters()  # as code written for nn.LSTM calls it
    output, _ = core(torch.randn(5, 7, 3, dtype=torch.float64))
    assert output.shape == (5, 7, 4) and output.dtype == torch.float64
    torch.manual_seed(0)
    default = cls(3, 4, 2)
    torch.manual_seed(0)
    explicit = cls(3, 4, 2, dtype=torch.float32, device="cpu")
    for a, b in zip(default.parameters(), explicit.parameters(), strict=True):
        assert torch.equal(a, b)  # same initialisation with or without the factory arguments


def test_the_cell_takes_dtype_and_device():
    cell = CerebralLSTMCell(3, 4, device="cpu", dtype=torch.float64)
    h, (c_upper, c_lower) = cell(torch.randn(2, 3, dtype=torch.float64))
    assert h.dtype == c_upper.dtype == c_lower.dtype == torch.float64 and h.shape == (2, 4)


@pytest.mark.parametrize("proj_size", [-1, 4, 5, 2.0])
@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM, NovoLSTM])
def test_a_projection_not_smaller_than_the_state_is_refused_in_one_clear_message(cls, proj_size):
    with pytest.raises(ValueError, match="proj_size must be 0 .* smaller than hidden_size"):
        cls(3, 4, proj_size=proj_size)


@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM, NovoLSTM])
def test_projected_cores_have_nn_lstm_parameter_names_order_and_shapes(cls):
    core = cls(3, 4, num_layers=2, bidirectional=True, proj_size=2, stacked_state=True) if cls is CerebralLSTM \
        else cls(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    ours = [name for name, _ in core.named_parameters() if not name.startswith(("bias_cell", "bias_hidden", "norm_"))]
    assert ours == [name for name, _ in lstm.named_parameters()]
    assert core.weight_hr_l1_reverse.shape == lstm.weight_hr_l1_reverse.shape == (2, 4)
    assert core.weight_ih_l1.shape[1] == 4 and core.weight_hh_l0.shape[1] == 2  # D * proj below; proj recurrent
    output, (h, c) = core(torch.randn(5, 3, 3))
    assert output.shape == (5, 3, 4) and h.shape == (4, 3, 2)
    assert c.shape == ((4, 3, 8) if cls is CerebralLSTM else (4, 3, 4))
    assert "proj_size=2" in repr(core)


@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM, NovoLSTM])
def test_bidirectional_cores_have_nn_lstm_shapes_and_parameter_names(cls):
    core = cls(3, 4, num_layers=2, bidirectional=True)
    names = {name for name, _ in core.named_parameters()}
    assert {"weight_ih_l0_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse"} <= names
    assert core.weight_ih_l1.shape[1] == core.weight_ih_l1_reverse.shape[1] == 8  # the layer below, both directions
    output, (h, c) = cls(3, 4, num_layers=2, bidirectional=True, stacked_state=True)(torch.randn(5, 2, 3)) \
        if cls is CerebralLSTM else core(torch.randn(5, 2, 3))
    assert output.shape == (5, 2, 8) and h.shape == (4, 2, 4)
    assert c.shape == ((4, 2, 8) if cls is CerebralLSTM else (4, 2, 4))


def truncated_bptt(rnn, data, state=None):
    """The usual nn.LSTM snippet: carry the state across chunks, detached."""
    optimizer = torch.optim.SGD(rnn.parameters(), lr=0.1)
    outputs = []
    for chunk in data.split(4):
        output, state = rnn(chunk, state)
        loss = output.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state = tuple(s.detach() for s in state)
        outputs.append(output.detach())
    return torch.cat(outputs), state


def test_the_stacked_state_runs_an_nn_lstm_snippet_unchanged_and_equals_the_nested_form():
    data = torch.randn(12, 3, 5)
    torch.manual_seed(0)
    reference, (h_ref, c_ref) = truncated_bptt(nn.LSTM(5, 6, 2), data)  # the snippet, as written for nn.LSTM
    assert reference.shape == (12, 3, 6) and h_ref.shape == c_ref.shape == (2, 3, 6)
    torch.manual_seed(0)
    ours, (h, c) = truncated_bptt(CerebralLSTM(5, 6, 2, stacked_state=True), data)
    assert c.shape == (2, 3, 12) and h.shape == (2, 3, 6)
    torch.manual_seed(0)
    nested = CerebralLSTM(5, 6, 2)
    outputs, state = [], None
    optimizer = torch.optim.SGD(nested.parameters(), lr=0.1)
    for chunk in data.split(4):
        output, (h_n, (c_upper, c_lower)) = nested(chunk, state)
        optimizer.zero_grad()
        output.pow(2).mean().backward()
        optimizer.step()
        state = (h_n.detach(), (c_upper.detach(), c_lower.detach()))
        outputs.append(output.detach())
    torch.testing.assert_close(ours, torch.cat(outputs), rtol=0, atol=0)
    torch.testing.assert_close(c, torch.cat(state[1], dim=-1), rtol=0, atol=0)


def test_either_state_form_is_accepted_back():
    torch.manual_seed(1)
    core = CerebralLSTM(3, 4, stacked_state=True)
    x = torch.randn(6, 2, 3)
    h0, c_upper, c_lower = torch.randn(1, 2, 4), torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    stacked = core(x, (h0, torch.cat([c_upper, c_lower], dim=-1)))
    nested = core(x, (h0, (c_upper, c_lower)))
    torch.testing.assert_close(stacked[0], nested[0], rtol=0, atol=0)
    core.stacked_state = False
    _, (h, (cu, cl)) = core(x, (h0, torch.cat([c_upper, c_lower], dim=-1)))
    torch.testing.assert_close(torch.cat([cu, cl], dim=-1), stacked[1][1], rtol=0, atol=0)


def test_the_cores_import_and_run_with_torch_alone():
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'hydra', 'omegaconf', 'pandas', 'matplotlib', 'tqdm', 'sklearn', 'scipy'}:\n"
        "            raise ImportError(f'{name} is not installed here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch\n"
        "from cerebral import CerebralLSTM, CerebralLSTMCell, NovoLSTM, PostBiasLSTM\n"
        "out, _ = CerebralLSTM(4, 8, batch_first=True)(torch.randn(2, 3, 4))\n"
        "print(tuple(out.shape), sorted(m for m in sys.modules if m.split('.')[0] in {'hydra', 'omegaconf'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(2, 3, 8) []"
