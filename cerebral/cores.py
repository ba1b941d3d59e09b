"""Recurrent cores with `torch.nn.LSTM`'s interface: the Cerebral LSTM and an LSTM with
post-activation biases (the two-stacked model of the paper, which `nn.LSTM` cannot express),
and the studies' variants: the Cerebral cell as printed in the paper, and NovoLSTM.

All run time-major: per layer, the input projection of all time steps is one GEMM, then one
recurrent GEMM per step feeds the gate pre-activations to the cell's update equations. The
Cerebral and post-bias cores run each layer as one autograd Function with a hand-written
backward (`FusedLayer`, `fused=True`); `fused=False` runs the equation-by-equation functions
below through autograd. That path is the oracle the fast one is tested against, and the only
path of the two variants.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from cerebral.precision import gemm_dtype


def cerebral_update(gates, upper_c, lower_c):
    """One Cerebral LSTM step from its eight gate pre-activations W . [h(t-1), x(t)] + b.

    Gate blocks along the last dimension, each `hidden_size` wide: i, f, o, c (candidate), the
    order of the TF code behind the paper, each block upper path then lower path.
    """
    ui, li, uf, lf, uo, lo, uc, lc = gates.chunk(8, dim=-1)
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


def cerebral_printed_update(gates, upper_c, lower_c):
    """The cell equation as printed in the paper's Section 4, an ablation: U_c = U_f * U_Ctmp +
    U_i * U_Ctmp (likewise L_c), so the cell state does not carry over from step to step."""
    ui, li, uf, lf, uo, lo, uc, lc = gates.chunk(8, dim=-1)
    U_Ctmp, L_Ctmp = torch.tanh(uc), torch.tanh(lc)
    U_c = torch.sigmoid(uf) * U_Ctmp + torch.sigmoid(ui) * U_Ctmp
    L_c = torch.sigmoid(lf) * L_Ctmp + torch.sigmoid(li) * L_Ctmp
    h = torch.sigmoid(uo) * torch.tanh(U_c) + torch.sigmoid(lo) * torch.tanh(L_c)
    return h, (U_c, L_c)


def novo_lstm_update(gates, c_prev, norm_weight, norm_bias):
    """One NovoLSTM step (../shared/reference/novolstm.txt): the input gate is
    LayerNorm(sigmoid(W_i [h, x] + b_i)) * softmax(W_i' [h, x] + b_i') over the hidden units;
    forget and output gates and the cell update as in an LSTM. Gate blocks i, i', f, o, g."""
    i, i_prime, f, o, g = gates.chunk(5, dim=-1)
    hidden = i.shape[-1]
    i = F.layer_norm(torch.sigmoid(i), (hidden,), norm_weight, norm_bias) * torch.softmax(i_prime, dim=-1)
    c = torch.sigmoid(f) * c_prev + i * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, (c,)


def post_bias_lstm_update(gates, c_prev, bias_cell, bias_hidden):
    """One LSTM step with learned biases after the activations (PROTOCOL fact 7):
    c = f * c(t-1) + i * g + b_c,  h = o * tanh(c) + b_h.  Gate order i, f, o, g (the TF code's)."""
    i, f, o, g = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g) + bias_cell
    h = torch.sigmoid(o) * torch.tanh(c) + bias_hidden
    return h, (c,)


def _onednn(x):
    """Whether x's GEMMs go to oneDNN, the library `nn.LSTM` runs on: on the CPU in fp32 it is
    about 30% faster than `addmm`'s sgemm at one step's shapes (128 x 512 by 512 x 4096)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()


def _linear(x, weight, bias=None):
    """x @ weight^T + bias, for a 2-D x."""
    if _onednn(x):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def _add_matmul(add, x, weight):
    """add + x @ weight^T, for a 2-D x. With x and weight in a lower precision than add (bf16
    operands, fp32 add), the product is rounded to theirs and added in add's."""
    if x.dtype != add.dtype:
        return torch.add(add, _linear(x, weight))
    if _onednn(x):
        return torch.ops.mkldnn._linear_pointwise.binary(x, add, weight, None, "add")
    return torch.addmm(add, x, weight.t())


class FusedLayer(torch.autograd.Function):
    """One layer over all time steps for P LSTM paths that share the hidden state:

        i, f, o, g = sigmoid, sigmoid, sigmoid, tanh of (xz[t] + h(t-1) W_hh^T)  (each P*H wide)
        c(t) = f * c(t-1) + i * g  [+ b_c]
        h(t) = sum over the P paths of o * tanh(c(t))  [+ b_h]

    P = 2 is the Cerebral LSTM, P = 1 with b_c, b_h the post-bias LSTM. The input projection
    xz = x W_ih^T + b of every step is one GEMM; gate blocks are i, f, o, g so that one sigmoid
    covers i, f, o and one tanh covers g, each block holding the P paths. Forward keeps the
    activated gates and tanh(c); backward walks the steps once for the gate gradients and
    computes each weight's gradient as one GEMM over all steps.

    `gemm_dtype` (e.g. bfloat16, from autocast) gives every GEMM operand that dtype, forward and
    backward; each product is rounded to it and everything else (gates, cell states, h, the
    gradients returned) stays in the inputs' dtype.
    """

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, h0, c0, bias_cell=None, bias_hidden=None, gemm_dtype=None):
        steps, batch, gate_width = x.shape[0], x.shape[1], w_ih.shape[0]
        if gemm_dtype in (None, x.dtype):
            x_g, w_ih_g, w_hh_g = x, w_ih, w_hh
            xz = _linear(x.reshape(steps * batch, -1), w_ih, bias).view(steps, batch, gate_width)
        else:  # the operands rounded to gemm_dtype, the bias added in full precision
            x_g, w_ih_g, w_hh_g = x.to(gemm_dtype), w_ih.to(gemm_dtype), w_hh.to(gemm_dtype)
            xz = _linear(x_g.reshape(steps * batch, -1), w_ih_g).to(x.dtype).view(steps, batch, gate_width)
            if bias is not None:
                xz.add_(bias)
        hidden, width = h0.shape[-1], gate_width // 4
        gates = []  # activated i, f, o, g of each step
        cells = xz.new_empty(steps + 1, batch, width)
        cells[0] = c0
        tanh_cells = xz.new_empty(steps, batch, width)
        out = xz.new_empty(steps, batch, hidden)
        h = h0
        for t in range(steps):
            a = _add_matmul(xz[t], h.to(w_hh_g.dtype), w_hh_g)
            a[:, : 3 * width].sigmoid_()
            a[:, 3 * width :].tanh_()
            gates.append(a)
            i, f, o, g = a.split(width, dim=1)
            c = torch.mul(f, cells[t], out=cells[t + 1]).addcmul_(i, g)
            if bias_cell is not None:
                c.add_(bias_cell)
            tanh_c = torch.tanh(c, out=tanh_cells[t])
            h = torch.mul(o[:, :hidden], tanh_c[:, :hidden], out=out[t])
            for p in range(hidden, width, hidden):  # the other paths' o * tanh(c), summed into h
                h.addcmul_(o[:, p : p + hidden], tanh_c[:, p : p + hidden])
            if bias_hidden is not None:
                h.add_(bias_hidden)
        ctx.save_for_backward(x_g, w_ih_g, w_hh_g, h0, out, cells, tanh_cells, *gates)
        ctx.dtypes = x.dtype, w_ih.dtype
        ctx.biases = bias is not None, bias_cell is not None, bias_hidden is not None
        return out, cells[steps].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_c_last):
        x, w_ih, w_hh, h0, out, cells, tanh_cells, *gates = ctx.saved_tensors  # x, weights in the GEMMs' dtype
        gemm, (x_dtype, w_dtype) = w_hh.dtype, ctx.dtypes
        steps, (batch, gate_width) = len(gates), gates[0].shape
        hidden, width = h0.shape[-1], gate_width // 4
        paths = width // hidden
        d_gates = gates[0].new_empty(steps, batch, gate_width)
        has_bias, has_bias_cell, has_bias_hidden = ctx.biases
        d_bias_cell = h0.new_zeros(width) if has_bias_cell else None
        d_bias_hidden = h0.new_zeros(hidden) if has_bias_hidden else None
        dc = d_c_last.clone()  # dL/dc(t), carried back through the steps
        dh = d_out[steps - 1]  # dL/dh(t) in full (autograd passes zeros for unused outputs)
        w_hh_t = w_hh.t().contiguous()  # the weight of dL/dh(t-1) = d_gates(t) @ w_hh
        by_path = lambda x: x.view(batch, paths, hidden)  # h is shared: broadcast its gradient over paths
        for t in reversed(range(steps)):
            a, d_a = gates[t], d_gates[t]
            i, f, o, g = a.split(width, dim=1)
            d_i, d_f, d_o, d_g = d_a.split(width, dim=1)
            dh_paths, tanh_c = dh.unsqueeze(1), by_path(tanh_cells[t])
            torch.mul(dh_paths, tanh_c, out=by_path(d_o))
            by_path(dc).add_(torch.ops.aten.tanh_backward(dh_paths * by_path(o), tanh_c))
            if has_bias_cell:
                d_bias_cell += dc.sum(0)
            if has_bias_hidden:
                d_bias_hidden += dh.sum(0)
            torch.mul(dc, g, out=d_i)
            torch.mul(dc, cells[t], out=d_f)
            torch.mul(dc, i, out=d_g)
            dc.mul_(f)
            torch.ops.aten.sigmoid_backward(d_a[:, : 3 * width], a[:, : 3 * width], grad_input=d_a[:, : 3 * width])
            torch.ops.aten.tanh_backward(d_g, g, grad_input=d_g)
            if t > 0:
                dh = _add_matmul(d_out[t - 1], d_a.to(gemm), w_hh_t)
            else:
                dh0 = _linear(d_a.to(gemm), w_hh_t).to(h0.dtype)
        d_xz = d_gates.view(-1, gate_width)
        d_bias = d_xz.sum(0) if has_bias else None
        d_xz = d_xz.to(gemm)
        x_flat = x.reshape(steps * batch, -1)
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]]).view(-1, hidden).to(gemm)
        d_x = _linear(d_xz, w_ih.t().contiguous()).view(x.shape).to(x_dtype) if ctx.needs_input_grad[0] else None
        d_w_ih, d_w_hh = (d_xz.t() @ x_flat).to(w_dtype), (d_xz.t() @ h_prev).to(w_dtype)
        return d_x, d_w_ih, d_bias, d_w_hh, dh0, dc, d_bias_cell, d_bias_hidden, None


def lstm_uniform_(module):
    """`nn.LSTM`'s initialisation: every parameter uniform in +-1/sqrt(hidden_size)."""
    bound = 1.0 / math.sqrt(module.hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


class _GatedRecurrence(nn.Module):
    """Parameters, state handling and the layer/time loop shared by the cores below.

    Parameters follow `nn.LSTM`: `weight_ih_l{k}` [gates * hidden, in], `weight_hh_l{k}`
    [gates * hidden, hidden], and with `bias=True` `bias_ih_l{k}`, `bias_hh_l{k}` [gates * hidden]
    (the equations' b is their sum). Subclasses set `num_gates`, `num_cells` and `step`.
    """

    num_gates = 4
    num_cells = 1
    fused = True  # False: the equation-by-equation reference path, through autograd

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
        lstm_uniform_(self)

    def _layer_bias(self, k):
        return getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}") if self.bias else None

    def _run_layer(self, k, x, h, cells):
        """Layer k over the time-major input x from state (h, cells): (output, h, cells)."""
        w_ih, w_hh, bias = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"), self._layer_bias(k)
        if self.fused:
            output, c = FusedLayer.apply(x, w_ih, bias, w_hh, h, torch.cat(cells, dim=-1), *self._post_biases(k),
                                         gemm_dtype(x.device))
            return output, output[-1], c.chunk(self.num_cells, dim=-1)
        # Every time step in one GEMM. Under bf16 autocast the products come back in bf16; adding
        # them to this full-precision projection keeps the gates and the cell update in it.
        projected = F.linear(x, w_ih, bias).to(x.dtype)
        outputs = []
        for x_t in projected.unbind(0):
            h, cells = self.step(x_t + F.linear(h, w_hh), cells, k)
            outputs.append(h)
        return torch.stack(outputs), h, cells

    def _post_biases(self, k):
        """(b_c, b_h) added after the activations, or (None, None)."""
        return None, None

    def step(self, gates, cells, layer):
        """One time step of the reference path: (h, cells) from the gate pre-activations."""
        raise NotImplementedError

    def _pack_state(self, h, cells):
        """(h, c) as `nn.LSTM`, or (h, (c_1, ..., c_n)) for several cell states."""
        return (h, cells[0]) if self.num_cells == 1 else (h, cells)

    def _unpack_state(self, state):
        h, c = state
        return h, (c,) if self.num_cells == 1 else tuple(c)

    def forward(self, input, state=None):
        batched = input.dim() == 3
        if input.shape[1 if batched and self.batch_first else 0] == 0:
            raise ValueError("input has no time steps")
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
            layer_input, h, cells = self._run_layer(k, layer_input, h0[k], tuple(c[k] for c in cells0))
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

    @torch.no_grad()
    def tie_paths_(self):
        """Make the lower path an exact copy of the upper one (the paper's Section 4.1 ablation,
        "identical initial values"): both paths then get identical gradients and stay equal."""
        for name, p in self.named_parameters():
            by_path = p.view(4, 2, self.hidden_size, -1)  # gate blocks i, f, o, g; upper, lower
            by_path[:, 1] = by_path[:, 0]


class CerebralLSTMPrinted(CerebralLSTM):
    """The Cerebral LSTM with the cell equation as printed in Section 4 (`cerebral_printed_update`):
    an ablation, run on the equation-by-equation path."""

    fused = False

    def step(self, gates, cells, layer):
        return cerebral_printed_update(gates, *cells)


class CerebralLSTMCell(nn.Module):
    """One Cerebral LSTM step, as `nn.LSTMCell`: forward(input (B, in), state=None) returns
    (h, (c_upper, c_lower)), each (B, hidden_size). Parameters `weight_ih` (8H, in),
    `weight_hh` (8H, H), `bias_ih`, `bias_hh` (8H), initialised as `nn.LSTMCell`."""

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = nn.Parameter(torch.empty(8 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(8 * hidden_size, hidden_size))
        for name in ("bias_ih", "bias_hh"):
            self.register_parameter(name, nn.Parameter(torch.empty(8 * hidden_size)) if bias else None)
        lstm_uniform_(self)

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
    PROTOCOL fact 7). Interface as `nn.LSTM`, gate blocks i, f, o, g; `bias` adds the usual gate
    biases; the post-activation biases are `bias_cell_l{k}` and `bias_hidden_l{k}` [H]."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout)
        for k in range(num_layers):
            setattr(self, f"bias_cell_l{k}", nn.Parameter(torch.empty(hidden_size)))
            setattr(self, f"bias_hidden_l{k}", nn.Parameter(torch.empty(hidden_size)))
        self.reset_parameters()

    def _post_biases(self, k):
        return getattr(self, f"bias_cell_l{k}"), getattr(self, f"bias_hidden_l{k}")

    def step(self, gates, cells, layer):
        return post_bias_lstm_update(gates, *cells, *self._post_biases(layer))


class NovoLSTM(_GatedRecurrence):
    """NovoLSTM: an LSTM whose input gate is LayerNorm(sigmoid(.)) * softmax(.) (`novo_lstm_update`).
    Interface as `nn.LSTM`; gate blocks i, i', f, o, g (5H rows); per layer a LayerNorm scale
    `norm_weight_l{k}` (ones) and shift `norm_bias_l{k}` (zeros). Runs on the equation path."""

    num_gates = 5
    fused = False

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout)
        for k in range(num_layers):  # LayerNorm starts as the identity
            setattr(self, f"norm_weight_l{k}", nn.Parameter(torch.ones(hidden_size)))
            setattr(self, f"norm_bias_l{k}", nn.Parameter(torch.zeros(hidden_size)))

    def reset_parameters(self):
        lstm_uniform_(self)
        for name, p in self.named_parameters():
            if name.startswith("norm_"):
                nn.init.ones_(p) if name.startswith("norm_weight") else nn.init.zeros_(p)

    def step(self, gates, cells, layer):
        return novo_lstm_update(gates, *cells, getattr(self, f"norm_weight_l{layer}"),
                                getattr(self, f"norm_bias_l{layer}"))
