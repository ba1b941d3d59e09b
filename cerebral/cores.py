"""Recurrent cores with `torch.nn.LSTM`'s interface: the Cerebral LSTM and an LSTM with
post-activation biases (the two-stacked model of the paper, which `nn.LSTM` cannot express).

Both run time-major: per layer, the input projection of all time steps is one GEMM, then one
recurrent GEMM per step feeds the gate pre-activations to the cell's update equations.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def cerebral_update(gates, upper_c, lower_c):
    """One Cerebral LSTM step from its eight gate pre-activations W . [h(t-1), x(t)] + b.

    Gate order along the last dimension: upper i, f, c, o, then lower i, f, c, o
    (each `hidden_size` wide; the same i, f, g, o order as `nn.LSTM`, once per path).
    """
    ui, uf, uc, uo, li, lf, lc, lo = gates.chunk(8, dim=-1)
    U_f = torch.sigmoid(uf)
    U_i = torch.sigmoid(ui)
    U_Ctmp = torch.tanh(uc)
    U_c = U_f * upper_c + U_i * U_Ctmp
    U_o = torch.sigmoid(uo)
    L_f = torch.sigmoid(lf)
    L_i = torch.sigmoid(li)
    L_Ctmp = torch.tanh(lc)
    L_c = L_f * lower_c + L_i * L_Ctmp
    L_o = torch.sigmoid(lo)
    h = U_o * torch.tanh(U_c) + L_o * torch.tanh(L_c)
    return h, (U_c, L_c)


def post_bias_lstm_update(gates, c_prev, bias_cell, bias_hidden):
    """One LSTM step with learned biases after the activations (PROTOCOL fact 7):
    c = f * c(t-1) + i * g + b_c,  h = o * tanh(c) + b_h.  Gate order i, f, g, o as `nn.LSTM`."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g) + bias_cell
    h = torch.sigmoid(o) * torch.tanh(c) + bias_hidden
    return h, (c,)


class _GatedRecurrence(nn.Module):
    """Parameters, state handling and the layer/time loop shared by the cores below.

    Parameters follow `nn.LSTM`: `weight_ih_l{k}` [gates * hidden, in], `weight_hh_l{k}`
    [gates * hidden, hidden], and with `bias=True` `bias_ih_l{k}`, `bias_hh_l{k}` [gates * hidden]
    (the equations' b is their sum). Subclasses set `num_gates`, `num_cells` and `step`.
    """

    num_gates = 4
    num_cells = 1

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0):
        super().__init__()
        if not (isinstance(hidden_size, int) and hidden_size > 0):
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        if not (isinstance(num_layers, int) and num_layers > 0):
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        gate_width = self.num_gates * hidden_size
        for k in range(num_layers):
            layer_input = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(gate_width, layer_input)))
            setattr(self, f"weight_hh_l{k}", nn.Parameter(torch.empty(gate_width, hidden_size)))
            if bias:
                setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(gate_width)))
                setattr(self, f"bias_hh_l{k}", nn.Parameter(torch.empty(gate_width)))
        self.reset_parameters()

    def reset_parameters(self):
        """`nn.LSTM`'s initialisation: every parameter uniform in +-1/sqrt(hidden_size)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _layer_bias(self, k):
        return getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}") if self.bias else None

    def step(self, gates, cells, layer):
        raise NotImplementedError

    def _pack_state(self, h, cells):
        raise NotImplementedError

    def _unpack_state(self, state):
        raise NotImplementedError

    def forward(self, input, state=None):
        batched = input.dim() == 3
        if not batched:  # (seq, feature), as nn.LSTM accepts
            input = input.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        batch = input.shape[1]
        if state is None:
            zeros = input.new_zeros(self.num_layers, batch, self.hidden_size)
            h0, cells0 = zeros, (zeros,) * self.num_cells
        else:
            h0, cells0 = self._unpack_state(state)
            if not batched:
                h0, cells0 = h0.unsqueeze(1), tuple(c.unsqueeze(1) for c in cells0)

        layer_input, h_n, cells_n = input, [], []
        for k in range(self.num_layers):
            w_hh = getattr(self, f"weight_hh_l{k}")
            projected = F.linear(layer_input, getattr(self, f"weight_ih_l{k}"), self._layer_bias(k))
            h, cells = h0[k], tuple(c[k] for c in cells0)
            outputs = []
            for x_t in projected.unbind(0):
                h, cells = self.step(x_t + F.linear(h, w_hh), cells, k)
                outputs.append(h)
            layer_input = torch.stack(outputs)
            if self.dropout and self.training and k < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
            h_n.append(h)
            cells_n.append(cells)

        h_n = torch.stack(h_n)
        cells_n = tuple(torch.stack(c) for c in zip(*cells_n))
        output = layer_input
        if not batched:
            output, h_n, cells_n = output.squeeze(1), h_n.squeeze(1), tuple(c.squeeze(1) for c in cells_n)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, self._pack_state(h_n, cells_n)

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}")


class CerebralLSTM(_GatedRecurrence):
    """Cerebral LSTM (Kumar 2020): two LSTM paths, upper and lower, with their own gates and
    cell states, read the same [h(t-1), x(t)] and add their outputs into one hidden state.

    A drop-in replacement for `nn.LSTM` (same arguments; `proj_size` and `bidirectional` are
    not offered). Shapes, with L = num_layers and H = hidden_size:
      input: (T, B, input_size), or (B, T, input_size) with batch_first, or (T, input_size)
      state: (h, (c_upper, c_lower)), each (L, B, H); zeros when omitted
      returns output (T, B, H) (or batch-first) and the final state in the same form.
    Parameters per layer k: `weight_ih_lk` (8H, in), `weight_hh_lk` (8H, H) and, with bias,
    `bias_ih_lk`, `bias_hh_lk` (8H), gates ordered as in `cerebral_update`.
    """

    num_gates = 8
    num_cells = 2

    def step(self, gates, cells, layer):
        return cerebral_update(gates, *cells)

    def _pack_state(self, h, cells):
        return h, cells

    def _unpack_state(self, state):
        h, (c_upper, c_lower) = state
        return h, (c_upper, c_lower)


class CerebralLSTMCell(nn.Module):
    """One Cerebral LSTM step, as `nn.LSTMCell`: forward(input (B, in), state=None) returns
    (h, (c_upper, c_lower)), each (B, hidden_size). Parameters `weight_ih` (8H, in),
    `weight_hh` (8H, H), `bias_ih`, `bias_hh` (8H), initialised as `nn.LSTMCell`."""

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = nn.Parameter(torch.empty(8 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(8 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(8 * hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(8 * hidden_size)) if bias else None
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, input, state=None):
        if state is None:
            zeros = input.new_zeros(*input.shape[:-1], self.hidden_size)
            state = (zeros, (zeros, zeros))
        h, (c_upper, c_lower) = state
        gates = F.linear(input, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        return cerebral_update(gates, c_upper, c_lower)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class PostBiasLSTM(_GatedRecurrence):
    """A multi-layer LSTM whose layers add learned biases after the activations,
    c = f * c(t-1) + i * g + b_c and h = o * tanh(c) + b_h (the published two-stacked run,
    PROTOCOL fact 7). Interface and gate layout as `nn.LSTM`; `bias` adds the usual gate
    biases; the post-activation biases are `bias_cell_l{k}` and `bias_hidden_l{k}` [H]."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout)
        for k in range(num_layers):
            setattr(self, f"bias_cell_l{k}", nn.Parameter(torch.empty(hidden_size)))
            setattr(self, f"bias_hidden_l{k}", nn.Parameter(torch.empty(hidden_size)))
        self.reset_parameters()

    def step(self, gates, cells, layer):
        return post_bias_lstm_update(gates, *cells, getattr(self, f"bias_cell_l{layer}"),
                                     getattr(self, f"bias_hidden_l{layer}"))

    def _pack_state(self, h, cells):
        return h, cells[0]

    def _unpack_state(self, state):
        h, c = state
        return h, (c,)
