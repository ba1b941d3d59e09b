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
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence

from cerebral.fused import FusedLayer, last_rows, step_rows
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
    """One NovoLSTM step (docs/MODELS.md, M3): the input gate is
    LayerNorm(sigmoid(W_i [h, x] + b_i)) * softmax(W_i' [h, x] + b_i') over the hidden units;
    forget and output gates and the cell update as in an LSTM. Gate blocks i, i', f, o, g."""
    i, i_prime, f, o, g = gates.chunk(5, dim=-1)
    hidden = i.shape[-1]
    i = F.layer_norm(torch.sigmoid(i), (hidden,), norm_weight, norm_bias) * torch.softmax(i_prime, dim=-1)
    c = torch.sigmoid(f) * c_prev + i * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, (c,)


def post_bias_lstm_update(gates, c_prev, bias_cell, bias_hidden):
    """One LSTM step with learned biases after the activations (docs/PROTOCOL.md, P7):
    c = f * c(t-1) + i * g + b_c,  h = o * tanh(c) + b_h (None: no such bias, nn.LSTM's step).
    Gate order i, f, o, g (the TF code's)."""
    i, f, o, g = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    if bias_cell is not None:
        c = c + bias_cell
    h = torch.sigmoid(o) * torch.tanh(c)
    if bias_hidden is not None:
        h = h + bias_hidden
    return h, (c,)


_UPSTREAM_GATES = ("i", "f", "o", "c")  # the package's names of our gate blocks i, f, o, g


def _swap_g_and_o(tensor):
    """Gate blocks i, f, g, o (nn.LSTM) as i, f, o, g (ours), or back: the last two blocks swapped."""
    return tensor.view(4, -1, *tensor.shape[1:])[[0, 1, 3, 2]].reshape(tensor.shape)


def _as_lstm_weight(name, tensor):
    """A 4-gate core's parameter in nn.LSTM's layout, or back: gate blocks swapped, `weight_hr` (no
    gate blocks) as a copy, so that nn.LSTM never holds (or flattens) our Parameter itself."""
    return tensor.clone() if name.startswith("weight_hr") else _swap_g_and_o(tensor)


def lstm_uniform_(module):
    """`nn.LSTM`'s initialisation: every parameter uniform in +-1/sqrt(hidden_size)."""
    bound = 1.0 / math.sqrt(module.hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


BACKENDS = ("fused", "lstm")  # train.backend, resolved (cerebral.models.resolve_backend)


def use_backend(model, backend):
    """Run every core of ours in `model` on `backend`: "fused" (our own kernels) or "lstm"
    (torch's nn.LSTM, on weights computed from ours each call); ValueError naming a core that
    cannot run as nn.LSTM. `nn.LSTM` cores run as themselves either way."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    for module in model.modules():
        if isinstance(module, _GatedRecurrence):
            if backend == "lstm":
                module.as_lstm()  # raises for a core no nn.LSTM expresses
            module.backend = backend
    return model


def _is_exporting():
    """Whether torch.export is tracing (always False on a torch too old to export the cores)."""
    return getattr(torch.compiler, "is_exporting", bool)()


def _structure(value):
    """The nesting of tuples and lists in value, anything else by its type: "(Tensor, (Tensor, NoneType))"."""
    if isinstance(value, (tuple, list)):
        return f"({', '.join(map(_structure, value))})"
    return type(value).__name__


def _select(state, index):
    """The state's sequences (dimension 1) in the order of `index`."""
    return state.index_select(1, index.to(state.device))


def _reverse_steps(x, batch_sizes):
    """The rows x (packed layout of `batch_sizes`, cerebral/fused.py) with each sequence's steps in
    reverse order; the layout stays the same, as every sequence keeps its length."""
    steps, batch = len(batch_sizes), batch_sizes[0]
    if min(batch_sizes) == batch:
        return x.view(steps, batch, -1).flip(0).view(x.shape)
    sizes = torch.tensor(batch_sizes)
    starts = sizes.cumsum(0) - sizes
    step = torch.repeat_interleave(torch.arange(steps), sizes)  # of each row
    sequence = torch.arange(len(x)) - starts[step]
    lengths = (sizes.unsqueeze(1) > torch.arange(batch)).sum(0)
    return x[(starts[lengths[sequence] - 1 - step] + sequence).to(x.device)]


class _GatedRecurrence(nn.Module):
    """Parameters, state handling and the layer/time loop shared by the cores below.

    Parameters follow `nn.LSTM`: `weight_ih_l{k}` [gates * hidden, in], `weight_hh_l{k}`
    [gates * hidden, proj_size or hidden], with `bias=True` `bias_ih_l{k}`, `bias_hh_l{k}`
    [gates * hidden] (the equations' b is their sum), with `proj_size` `weight_hr_l{k}`
    [proj_size, hidden]; k runs over `_layer_keys()`. Subclasses set `num_gates`, `num_cells` and
    `step`.
    """

    num_gates = 4
    num_cells = 1
    fused = True  # False: the equation-by-equation reference path, through autograd
    elementwise = "aten"  # the fused path's elementwise work: "aten" calls, the "cpp" or "seq" kernel (elementwise.py)
    backend = "fused"  # "lstm": run as torch's nn.LSTM (cuDNN on CUDA), on weights computed from ours (`as_lstm`)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None, *,
                 stacked_state=False):
        super().__init__()
        if not (isinstance(hidden_size, int) and hidden_size > 0):
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        if not (isinstance(num_layers, int) and num_layers > 0):
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                          stacklevel=1)  # here, as nn.LSTM's is in rnn.py: subclasses and converters call it too
        if not (isinstance(proj_size, int) and 0 <= proj_size < hidden_size):
            raise ValueError(f"proj_size must be 0 (no projection) or a positive integer smaller than hidden_size "
                             f"({hidden_size}), got {proj_size!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size, self.stacked_state = bool(bidirectional), proj_size, stacked_state
        factory = {"device": device, "dtype": dtype}
        gate_width, output_size = self.num_gates * hidden_size, proj_size or hidden_size
        for key in self._layer_keys():
            layer_input = input_size if key in ("0", "0_reverse") else output_size * self.num_directions
            setattr(self, f"weight_ih_l{key}", nn.Parameter(torch.empty(gate_width, layer_input, **factory)))
            setattr(self, f"weight_hh_l{key}", nn.Parameter(torch.empty(gate_width, output_size, **factory)))
            if bias:
                setattr(self, f"bias_ih_l{key}", nn.Parameter(torch.empty(gate_width, **factory)))
                setattr(self, f"bias_hh_l{key}", nn.Parameter(torch.empty(gate_width, **factory)))
            if proj_size:
                setattr(self, f"weight_hr_l{key}", nn.Parameter(torch.empty(proj_size, hidden_size, **factory)))
        self.reset_parameters()

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def _layer_keys(self):
        """The parameter-name suffix of each layer and direction, in nn.LSTM's order: "0",
        "0_reverse", "1", ... (the suffix of `weight_ih_l0_reverse`)."""
        return [f"{k}{suffix}" for k in range(self.num_layers) for suffix in ("", "_reverse")[: self.num_directions]]

    def flatten_parameters(self):
        """A no-op: code written for `nn.LSTM` calls it; these cores keep no flat weight buffer."""

    def reset_parameters(self):
        lstm_uniform_(self)

    def _layer_bias(self, k):
        return getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}") if self.bias else None

    def _run_layer(self, k, x, batch_sizes, h, cells):
        """Layer and direction k (a `_layer_keys` key) over x, rows in the packed layout of
        `batch_sizes` (cerebral/fused.py), from state (h, cells): (output rows, h, cells) with each
        sequence's last h and cells. A reverse direction reads each sequence's steps last to first.
        batch_sizes None: x is time-major (T, B, in), run in the exportable form."""
        if batch_sizes is None:
            return self._scan_steps(k, x, h, cells)
        if not k.endswith("_reverse"):
            return self._run_steps(k, x, batch_sizes, h, cells)
        output, h, cells = self._run_steps(k, _reverse_steps(x, batch_sizes), batch_sizes, h, cells)
        return _reverse_steps(output, batch_sizes), h, cells

    def _run_steps(self, k, x, batch_sizes, h, cells):
        """The steps of x in order, with layer and direction k's parameters."""
        w_ih, w_hh, bias = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"), self._layer_bias(k)
        w_hr = getattr(self, f"weight_hr_l{k}") if self.proj_size else None
        last = last_rows(batch_sizes)
        if self.fused:
            output, c = FusedLayer.apply(x, w_ih, bias, w_hh, h, torch.cat(cells, dim=-1), *self._post_biases(k), w_hr,
                                         batch_sizes, gemm_dtype(x), self.elementwise)
            return output, output[last], c.chunk(self.num_cells, dim=-1)
        # Every time step in one GEMM. Under bf16 autocast the products come back in bf16; adding
        # them to this full-precision projection keeps the gates and the cell update in it.
        projected = F.linear(x, w_ih, bias).to(x.dtype)
        outputs, cells_by_step = [], []
        for start, size in step_rows(batch_sizes):  # the first `size` sequences are still running
            h, cells = self.step(projected[start : start + size] + F.linear(h[:size], w_hh),
                                 tuple(c[:size] for c in cells), k)
            if w_hr is not None:
                h = F.linear(h, w_hr).to(x.dtype)
            outputs.append(h)
            cells_by_step.append(cells)
        output = torch.cat(outputs)
        return output, output[last], tuple(torch.cat(c)[last] for c in zip(*cells_by_step, strict=True))

    def _scan_steps(self, k, x, h, cells):
        """The equations of `_run_steps` over time-major x (T, B, in) as one `scan`, the loop that
        torch.export and the ONNX exporter keep as one node, the time dimension dynamic."""
        from torch._higher_order_ops.scan import scan  # export only: a recent torch (tested with 2.13)

        w_hh = getattr(self, f"weight_hh_l{k}")
        w_hr = getattr(self, f"weight_hr_l{k}") if self.proj_size else None

        def step(carry, projected):
            h, *cells = carry
            h, cells = self.step(projected + F.linear(h, w_hh), tuple(cells), k)
            if w_hr is not None:
                h = F.linear(h, w_hr)
            return (h, *cells), h.clone()  # a scan's outputs may not alias its carry

        projected = F.linear(x, getattr(self, f"weight_ih_l{k}"), self._layer_bias(k))
        (h, *cells), output = scan(step, (h.clone(), *(c.clone() for c in cells)), projected,
                                   reverse=k.endswith("_reverse"))
        return output, h, tuple(cells)

    def _post_biases(self, k):
        """(b_c, b_h) added after the activations, or (None, None)."""
        return None, None

    def as_lstm(self):
        """(hidden_size, proj_size, {parameter name: tensor}) of an nn.LSTM with this core's
        function, the tensors computed from our parameters, so that gradients reach them;
        ValueError for a core no nn.LSTM can express."""
        raise ValueError(f"{type(self).__name__} cannot run as nn.LSTM: no nn.LSTM computes its cell")

    def to_lstm(self):
        """An nn.LSTM with this core's function, as a copy (training it does not train this core)."""
        return self._lstm_from(*self.as_lstm())

    def _lstm_like(self, hidden, proj_size, **factory):
        """An nn.LSTM with this core's options, `hidden` cells and `proj_size` (its dropout only with
        two layers or more, where nn.LSTM has any, so that it does not warn at every call)."""
        return nn.LSTM(self.input_size, hidden, self.num_layers, self.bias, self.batch_first,
                       self.dropout if self.num_layers > 1 else 0.0, self.bidirectional, proj_size, **factory)

    @torch.no_grad()
    def _lstm_from(self, hidden, proj_size, parameters):
        weight = self.weight_ih_l0
        lstm = self._lstm_like(hidden, proj_size, device=weight.device, dtype=weight.dtype)
        for name, p in lstm.named_parameters():
            p.copy_(parameters[name])
        return lstm

    def _forward_as_lstm(self, input, state):
        """`forward` through torch's own LSTM (`backend="lstm"`): cuDNN's kernel on CUDA. Its dropout
        masks (layers > 1) come from that kernel, not from the fused path's draws."""
        hidden, proj_size, parameters = self.as_lstm()
        template = self._lstm_like(hidden, proj_size, device="meta")  # no memory, no random numbers
        template.train(self.training)
        if state is not None:
            h, cells = self._unpack_state(state)
            state = (h, torch.cat(cells, dim=-1))
        output, (h, c) = functional_call(template, parameters, (input, state))
        return output, self._pack_state(h, c.chunk(self.num_cells, dim=-1))

    def step(self, gates, cells, layer):
        """One time step of the reference path: (h, cells) from the gate pre-activations."""
        raise NotImplementedError

    def _pack_state(self, h, cells):
        """(h, c) as `nn.LSTM`; with several cell states (h, (c_1, ..., c_n)), or with
        `stacked_state` (h, c) where c holds them side by side in its last dimension."""
        if self.num_cells == 1:
            return h, cells[0]
        return (h, torch.cat(cells, dim=-1)) if self.stacked_state else (h, cells)

    def _unpack_state(self, state):
        """(h, cells) from either form `_pack_state` gives."""
        h, c = state
        if self.num_cells == 1:
            return h, (c,)
        return h, tuple(c.chunk(self.num_cells, dim=-1)) if isinstance(c, torch.Tensor) else tuple(c)

    def _check_forward_args(self, input, state):
        """nn.LSTM's checks of the input and the state, in its words: a clear error before any kernel
        runs, instead of an obscure one from a kernel or a state silently cut to the input's batch.
        Under autocast dtypes may differ, as nn.LSTM allows."""
        if isinstance(input, PackedSequence):
            x, batch = input.data, int(input.batch_sizes[0])
            if x.dim() != 2:
                raise RuntimeError(f"input must have 2 dimensions, got {x.dim()}")
        else:
            x = input
            if x.dim() not in (2, 3):
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {x.dim()}D instead")
            batch = x.shape[0 if self.batch_first else 1] if x.dim() == 3 else None
        weight, autocasting = self.weight_ih_l0, torch.is_autocast_enabled(x.device.type)
        if x.dtype != weight.dtype and not autocasting:
            raise ValueError(f"RNN input dtype ({x.dtype}) does not match weight dtype ({weight.dtype}). "
                             f"Convert input: input.to({weight.dtype}), or convert model: model.to({x.dtype})")
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {x.shape[-1]}")
        if state is not None:
            self._check_state(state, batch, None if autocasting else x.dtype)

    def _check_state(self, state, batch, dtype):
        """The state in a form `_unpack_state` reads, each tensor of nn.LSTM's shape: h (L*D, B, R),
        each cell state (L*D, B, H), or (L*D, B, 2H) stacked, without B where batch is None
        (unbatched input); and of `dtype` unless it is None."""
        h, c = state if isinstance(state, (tuple, list)) and len(state) == 2 else (None, None)
        nested = self.num_cells > 1 and isinstance(c, (tuple, list)) and len(c) == self.num_cells
        cells = tuple(c) if nested else (c,)  # else one tensor: every cell state side by side
        tensors = (h, *cells)
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            form = "(h, c)" if self.num_cells == 1 else "(h, (c_upper, c_lower)) or (h, c) with c the two side by side"
            raise TypeError(f"{type(self).__name__}: state must be {form}, of tensors, got {_structure(state)}")
        if any(t.dim() != (2 if batch is None else 3) for t in tensors):
            kind = "unbatched 2-D input, hx and cx should also be 2-D" if batch is None \
                else "batched 3-D input, hx and cx should also be 3-D"
            raise RuntimeError(f"For {kind} but got ({', '.join(f'{t.dim()}-D' for t in tensors)}) tensors")
        names = ["hidden[0]"] + ([f"hidden[1][{i}]" for i in range(len(cells))] if nested else ["hidden[1]"])
        cell_width = self.hidden_size if nested else self.num_cells * self.hidden_size
        widths = [self.proj_size or self.hidden_size] + [cell_width] * len(cells)
        for name, t, width in zip(names, tensors, widths, strict=True):
            expected = (self.num_layers * self.num_directions, *([] if batch is None else [batch]), width)
            if t.shape != expected:
                raise RuntimeError(f"Expected {name} size {expected}, got {list(t.shape)}")
            if dtype is not None and t.dtype != dtype:
                raise RuntimeError(f"Expected {name} dtype {dtype}, the input's, got {t.dtype}")

    def forward(self, input, hx=None):
        """(output, state) as nn.LSTM's forward returns them, for input (T, B, in), (B, T, in) with
        batch_first, (T, in) unbatched, or a PackedSequence, and `hx` the initial state (zeros if
        None) in the form the class docstring gives."""
        packed, exporting = isinstance(input, PackedSequence), _is_exporting()
        if packed and exporting:
            raise ValueError(f"{type(self).__name__}: export takes padded input (T, B, in) with dynamic T and B, "
                             "not a PackedSequence")
        self._check_forward_args(input, hx)
        if self.backend == "lstm":
            return self._forward_as_lstm(input, hx)
        if packed:  # rows already in the layout the layers run on
            x, batch_sizes, batched = input.data, tuple(input.batch_sizes.tolist()), True
            batch = batch_sizes[0]
        else:
            batched = input.dim() == 3
            if input.shape[1 if batched and self.batch_first else 0] == 0:
                raise ValueError("input has no time steps")
            if not batched:  # (seq, feature), as nn.LSTM accepts
                input = input.unsqueeze(1)
            elif self.batch_first:
                input = input.transpose(0, 1)
            steps, batch = input.shape[:2]
            x, batch_sizes = (input, None) if exporting else (input.flatten(0, 1), (batch,) * steps)
        if hx is None:
            h0 = x.new_zeros(self.num_layers * self.num_directions, batch, self.proj_size or self.hidden_size)
            cells0 = (x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size),) * self.num_cells
        else:
            h0, cells0 = self._unpack_state(hx)
            if not batched:
                h0, cells0 = h0.unsqueeze(1), tuple(c.unsqueeze(1) for c in cells0)
            if packed and input.sorted_indices is not None:  # the caller's order -> longest first
                h0, cells0 = _select(h0, input.sorted_indices), tuple(_select(c, input.sorted_indices) for c in cells0)
        if batch == 0:  # no sequence to run: an empty output and the initial state, as nn.LSTM returns
            # them: in the graph of the input and every weight, which backpropagate zeros
            zero = sum(t.flatten()[:0].sum() for t in (x, *self.parameters()))
            h0, cells0 = h0 + zero, tuple(c + zero for c in cells0)
            output = x.new_zeros(steps, 0, self.num_directions * (self.proj_size or self.hidden_size)) + zero
            return (output.transpose(0, 1) if self.batch_first else output), self._pack_state(h0, cells0)

        layer_input, h_n, cells_n = x, [], []
        keys = self._layer_keys()
        for k in range(self.num_layers):
            outputs = []
            for i in range(k * self.num_directions, (k + 1) * self.num_directions):  # index into h0, h_n
                output, h, cells = self._run_layer(keys[i], layer_input, batch_sizes, h0[i], tuple(c[i] for c in cells0))
                outputs.append(output)
                h_n.append(h)
                cells_n.append(cells)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if self.dropout and self.training and k < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)

        h_n = torch.stack(h_n)
        cells_n = tuple(torch.stack(c) for c in zip(*cells_n, strict=True))
        if packed:
            if input.unsorted_indices is not None:  # back to the caller's order
                h_n, cells_n = _select(h_n, input.unsorted_indices), tuple(_select(c, input.unsorted_indices) for c in cells_n)
            return PackedSequence(layer_input, input.batch_sizes, input.sorted_indices, input.unsorted_indices), \
                self._pack_state(h_n, cells_n)
        output = layer_input.view(steps, batch, -1)
        if not batched:
            output, h_n, cells_n = output.squeeze(1), h_n.squeeze(1), tuple(c.squeeze(1) for c in cells_n)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, self._pack_state(h_n, cells_n)

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}"
                + (", bidirectional=True" if self.bidirectional else "")
                + (f", proj_size={self.proj_size}" if self.proj_size else "")
                + (", stacked_state=True" if self.stacked_state else ""))


class CerebralLSTM(_GatedRecurrence):
    r"""Cerebral LSTM (Kumar 2020): two LSTM paths, upper (U) and lower (L), with their own gates
    and cell states, read the same [h(t-1), x(t)] and add their outputs into one hidden state.
    For each layer, with P in {U, L} and W_P., b_P. the path's rows of the weights below:

        P_i = sigmoid(W_Pi [h(t-1), x(t)] + b_Pi)       P_f = sigmoid(W_Pf [h(t-1), x(t)] + b_Pf)
        P_o = sigmoid(W_Po [h(t-1), x(t)] + b_Po)       P_Ctmp = tanh(W_Pc [h(t-1), x(t)] + b_Pc)
        P_c(t) = P_f * P_c(t-1) + P_i * P_Ctmp
        h(t) = U_o * tanh(U_c(t)) + L_o * tanh(L_c(t))

    (docs/MODELS.md, M2: the paper prints P_c(t) = P_f * P_Ctmp + P_i * P_Ctmp; this is the
    recurrent form of the upstream package and README, `CerebralLSTMPrinted` the printed one.)

    With `proj_size` = R > 0, as in nn.LSTM's projected LSTM: h(t) = W_hr (U_o * tanh(U_c(t)) +
    L_o * tanh(L_c(t))), h of width R (the cell states keep width H).

    The same function is an `nn.LSTM` of 2H cells [upper; lower] whose projection is fixed to
    [I I] (R = H) or [W_hr W_hr]: `to_lstm()` and `from_lstm()` convert (docs/MODELS.md, "What
    the Cerebral LSTM is"), and `backend = "lstm"` (`use_backend`) runs the module through torch's
    own LSTM, cuDNN's on CUDA, on weights computed from its parameters at every call.

    A drop-in replacement for `nn.LSTM`: the same arguments (`bidirectional`, `proj_size`,
    `device` and `dtype` included), `PackedSequence` input, and `flatten_parameters()`. Shapes,
    with L = num_layers, D = 2 if bidirectional else 1, B = batch, T = time steps, H =
    hidden_size, R = proj_size or H:
      input: (T, B, input_size), or (B, T, input_size) with batch_first, or (T, input_size), or
        a PackedSequence (then the output is one, and each sequence's final state is the one at
        its own last step, in the caller's order)
      state: (h, (c_upper, c_lower)), h (L*D, B, R), each c (L*D, B, H) (without B unbatched),
        layer by layer, forward then reverse; zeros when omitted. With `stacked_state=True`
        (h, c), c (L*D, B, 2H) holding c_upper then c_lower, so that nn.LSTM idioms such as
        `tuple(s.detach() for s in state)` work. Either form is accepted back.
      returns output (T, B, D*R) (or batch-first) and the final state in the chosen form.
    Parameters per layer k, 8H rows in gate blocks i, f, o, g (g = the candidate, P_Ctmp; unlike
    `nn.LSTM`'s i, f, g, o), each block H rows of the upper path then H of the lower:
      `weight_ih_lk` (8H, in_k), `weight_hh_lk` (8H, R), with bias `bias_ih_lk`, `bias_hh_lk` (8H)
      (b = bias_ih + bias_hh), with proj_size `weight_hr_lk` (R, H); in_0 = input_size and in_k =
      D*R above; the reverse direction's the same with the suffix `_reverse`. Initialised as
      `nn.LSTM`: uniform in +-1/sqrt(H).
    """

    num_gates = 8
    num_cells = 2

    def step(self, gates, cells, layer):
        return cerebral_update(gates, *cells)

    @classmethod
    @torch.no_grad()
    def from_upstream(cls, module, *, stacked_state=False):
        """Our CerebralLSTM with the function of the `cerebral-lstm` package's (1.1.1) CerebralLSTM:
        its W_<path><gate> ([h, x] rows by H columns) split into weight_hh and weight_ih, its
        biases as bias_ih (bias_hh zero). Time-major, as the package is; `stacked_state` as ours."""
        if cls.step is not CerebralLSTM.step:
            raise ValueError(f"{cls.__name__}.from_upstream: its cell is not the package's; use CerebralLSTM")
        cells = list(module.layers)
        first = cells[0]
        core = cls(first.input_size, first.hidden_size, len(cells), bias=True,
                   dropout=module.dropout.p if module.dropout is not None else 0.0,
                   device=first.W_uf.device, dtype=first.W_uf.dtype, stacked_state=stacked_state)
        hidden = first.hidden_size
        for k, cell in enumerate(cells):
            blocks = [getattr(cell, f"W_{path}{gate}") for gate in _UPSTREAM_GATES for path in "ul"]
            getattr(core, f"weight_hh_l{k}").copy_(torch.cat([w[:hidden].T for w in blocks]))
            getattr(core, f"weight_ih_l{k}").copy_(torch.cat([w[hidden:].T for w in blocks]))
            getattr(core, f"bias_ih_l{k}").copy_(torch.cat([getattr(cell, f"b_{path}{gate}")
                                                            for gate in _UPSTREAM_GATES for path in "ul"]))
            getattr(core, f"bias_hh_l{k}").zero_()
        return core

    @torch.no_grad()
    def to_upstream(self):
        """The `cerebral-lstm` package's CerebralLSTM with this core's function (the package must be
        installed). It runs time-major input in one direction without projection, so a core with
        batch_first, bidirectional or proj_size is refused."""
        import cerebral_lstm

        if self.batch_first or self.bidirectional or self.proj_size:
            raise ValueError("CerebralLSTM.to_upstream: the cerebral-lstm package takes time-major input in one "
                             "direction, without projection; convert a core with batch_first=False, "
                             "bidirectional=False and proj_size=0")
        module = cerebral_lstm.CerebralLSTM(self.input_size, self.hidden_size, self.num_layers, dropout=self.dropout)
        module.to(device=self.weight_ih_l0.device, dtype=self.weight_ih_l0.dtype)
        hidden = self.hidden_size
        for k, cell in enumerate(module.layers):
            w_hh = getattr(self, f"weight_hh_l{k}").view(4, 2, hidden, -1)
            w_ih = getattr(self, f"weight_ih_l{k}").view(4, 2, hidden, -1)
            bias = self._layer_bias(k)
            for g, gate in enumerate(_UPSTREAM_GATES):
                for p, path in enumerate("ul"):
                    getattr(cell, f"W_{path}{gate}").copy_(torch.cat([w_hh[g, p].T, w_ih[g, p].T]))
                    getattr(cell, f"b_{path}{gate}").copy_(bias.view(4, 2, hidden)[g, p] if bias is not None else 0)
        return module

    def as_lstm(self):
        """(hidden_size, proj_size, parameters) of the nn.LSTM of 2H cells with this core's function
        (docs/MODELS.md, M5): in each gate block the upper path's cells then the lower's, the blocks
        reordered to nn.LSTM's i, f, g, o, and as `weight_hr` the fixed projection [I I] (a
        constant), or [W_hr W_hr] with proj_size R. Its cell state is ours with `stacked_state=True`.
        `to_lstm()` makes it (train it with `weight_hr` frozen to keep this function)."""
        weight, hidden = self.weight_ih_l0, self.hidden_size
        identity = torch.eye(hidden, device=weight.device, dtype=weight.dtype)
        parameters = {}
        for k in self._layer_keys():
            for name in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else ()):
                parameters[f"{name}_l{k}"] = _swap_g_and_o(getattr(self, f"{name}_l{k}"))
            half = getattr(self, f"weight_hr_l{k}") if self.proj_size else identity
            parameters[f"weight_hr_l{k}"] = torch.cat([half, half], dim=1)
        return 2 * hidden, self.proj_size or hidden, parameters

    @classmethod
    @torch.no_grad()
    def from_lstm(cls, lstm, *, stacked_state=False):
        """The CerebralLSTM with `lstm`'s function, where `lstm` is one `to_lstm` can give: 2H
        cells and in every layer a projection of two equal halves, each the identity (R = H, our
        proj_size 0) or a matrix W of R < H rows (our weight_hr); `stacked_state` as ours (True:
        the state in `lstm`'s form). ValueError naming the cause for any other."""
        def refuse(problem):
            return ValueError(f"{cls.__name__}.from_lstm: {problem}; only an nn.LSTM of 2H cells whose weight_hr is "
                              "[I I] or [W W] (W with fewer than H rows) is a Cerebral LSTM (CerebralLSTM.to_lstm)")

        if cls.step is not CerebralLSTM.step:
            raise refuse(f"{cls.__name__}'s cell is not the one nn.LSTM computes")

        if not lstm.proj_size:
            raise refuse("the LSTM has no projection (proj_size=0), and its h is not a sum of two paths")
        if lstm.hidden_size % 2:
            raise refuse(f"its hidden_size {lstm.hidden_size} is odd, so its cells do not split into two paths")
        hidden = lstm.hidden_size // 2
        if lstm.proj_size > hidden:
            raise refuse(f"its projection (proj_size {lstm.proj_size}) is wider than the {hidden} cells of a path")
        halves = {name: p.chunk(2, dim=1) for name, p in lstm.named_parameters() if name.startswith("weight_hr")}
        for name, (left, right) in halves.items():
            if not torch.equal(left, right):
                raise refuse(f"{name} is not two equal halves")
            if lstm.proj_size == hidden and not torch.equal(left, torch.eye(hidden, dtype=left.dtype, device=left.device)):
                raise refuse(f"{name}'s halves are not the identity, which a projection as wide as a path must be")
        weight = lstm.weight_ih_l0
        core = cls(lstm.input_size, hidden, lstm.num_layers, lstm.bias, lstm.batch_first, lstm.dropout,
                   lstm.bidirectional, lstm.proj_size if lstm.proj_size < hidden else 0,
                   device=weight.device, dtype=weight.dtype, stacked_state=stacked_state)
        for name, p in core.named_parameters():
            p.copy_(halves[name][0] if name.startswith("weight_hr") else _swap_g_and_o(getattr(lstm, name)))
        return core

    @torch.no_grad()
    def tie_paths_(self):
        """Make the lower path an exact copy of the upper one (the paper's Section 4.1 ablation,
        "identical initial values"): both paths then get identical gradients and stay equal."""
        for name, p in self.named_parameters():
            if name.startswith("weight_hr"):  # the projection acts on h, which the paths share
                continue
            by_path = p.view(4, 2, self.hidden_size, -1)  # gate blocks i, f, o, g; upper, lower
            by_path[:, 1] = by_path[:, 0]


class CerebralLSTMPrinted(CerebralLSTM):
    """The Cerebral LSTM with the cell equation as printed in the paper's Section 4 (an ablation,
    docs/MODELS.md, M2): P_c(t) = P_f * P_Ctmp + P_i * P_Ctmp, no recurrence on the cell state;
    otherwise `CerebralLSTM` (equations, shapes, parameters and gate layout). Runs on the
    equation-by-equation path."""

    fused = False
    as_lstm = _GatedRecurrence.as_lstm  # no recurrence on the cell state: no nn.LSTM computes it

    def step(self, gates, cells, layer):
        return cerebral_printed_update(gates, *cells)


class CerebralLSTMCell(nn.Module):
    """One Cerebral LSTM step (the equations of `CerebralLSTM`), as `nn.LSTMCell`:
    forward(input (B, input_size) or (input_size,), state=None) returns (h, (c_upper, c_lower)),
    each (B, H) (or (H,)); the state defaults to zeros. Parameters `weight_ih` (8H, input_size),
    `weight_hh` (8H, H), `bias_ih`, `bias_hh` (8H), in gate blocks i, f, o, g, each upper then
    lower path; initialised as `nn.LSTMCell`."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        if not (isinstance(hidden_size, int) and hidden_size > 0):
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = nn.Parameter(torch.empty(8 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(8 * hidden_size, hidden_size, **factory))
        for name in ("bias_ih", "bias_hh"):
            self.register_parameter(name, nn.Parameter(torch.empty(8 * hidden_size, **factory)) if bias else None)
        lstm_uniform_(self)

    def forward(self, input, hx=None):
        """(h, (c_upper, c_lower)) after one step from input (B, in) or (in,) and `hx` of that form
        (zeros if None), each (B, H) or (H,)."""
        if hx is None:
            zeros = input.new_zeros(*input.shape[:-1], self.hidden_size)
            hx = (zeros, (zeros, zeros))
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2 and isinstance(hx[1], (tuple, list))
                and len(hx[1]) == 2 and all(isinstance(t, torch.Tensor) for t in (hx[0], *hx[1]))):
            raise TypeError(f"CerebralLSTMCell: hx must be (h, (c_upper, c_lower)) of tensors, got {_structure(hx)}")
        h, (c_upper, c_lower) = hx
        self._check_step_args(input, (h, c_upper, c_lower))
        gates = F.linear(input, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        return cerebral_update(gates, c_upper, c_lower)

    def _check_step_args(self, input, tensors):
        """nn.LSTMCell's checks: a state of another batch would broadcast silently."""
        if input.dim() not in (1, 2):
            raise ValueError(f"CerebralLSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.shape[-1]} expected {self.input_size}")
        expected = (*input.shape[:-1], self.hidden_size)
        for name, t in zip(("h", "c_upper", "c_lower"), tensors, strict=True):
            if t.shape != expected:
                raise RuntimeError(f"CerebralLSTMCell: for input of shape {tuple(input.shape)}, {name} of shape "
                                   f"{expected} expected, got {tuple(t.shape)}")

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class PostBiasLSTM(_GatedRecurrence):
    """A multi-layer LSTM whose layers add learned biases after the activations (the published
    two-stacked run, docs/PROTOCOL.md, P7), per layer:

        i, f, o = sigmoid(W_i|f|o [h(t-1), x(t)] + b_i|f|o)     g = tanh(W_g [h(t-1), x(t)] + b_g)
        c(t) = f * c(t-1) + i * g + b_c
        h(t) = o * tanh(c(t)) + b_h

    With b_c = b_h = 0 this is `nn.LSTM`'s function; with `proj_size`, h(t) = W_hr (o * tanh(c(t))
    + b_h). Interface, shapes and parameter names as `nn.LSTM` (see `CerebralLSTM`), state (h, c)
    with c (L*D, B, H). Parameters per layer k: `weight_ih_lk` (4H, in_k), `weight_hh_lk` (4H, R),
    with bias `bias_ih_lk`, `bias_hh_lk` (4H), in gate blocks i, f, o, g (nn.LSTM: i, f, g, o),
    with proj_size `weight_hr_lk` (R, H); the post-activation biases `bias_cell_lk` and
    `bias_hidden_lk` (H). With `post_bias=False` there are none: `nn.LSTM`'s function and
    parameters, on the fused path (the learned-projection baselines train on it)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None, *, post_bias=True):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)
        self.post_bias = post_bias
        if post_bias:
            for k in self._layer_keys():
                setattr(self, f"bias_cell_l{k}", nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype)))
                setattr(self, f"bias_hidden_l{k}", nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype)))
            self.reset_parameters()

    def _post_biases(self, k):
        if not self.post_bias:
            return None, None
        return getattr(self, f"bias_cell_l{k}"), getattr(self, f"bias_hidden_l{k}")

    def _lstm_names(self):
        """The parameters nn.LSTM has too, in its order."""
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else ()) + \
            (("weight_hr",) if self.proj_size else ())
        return [f"{name}_l{k}" for k in self._layer_keys() for name in names]

    @torch.no_grad()
    def _copy_lstm_parameters(self, source, target):
        """Each `_lstm_names` parameter from source into target, its gate blocks reordered between
        nn.LSTM's i, f, g, o and ours, i, f, o, g (weight_hr has no gate blocks)."""
        for name in self._lstm_names():
            getattr(target, name).copy_(_as_lstm_weight(name, getattr(source, name)))

    @classmethod
    def from_lstm(cls, lstm, post_bias=True):
        """The PostBiasLSTM that computes exactly `lstm`'s function: its weights with the gate
        blocks reordered from nn.LSTM's i, f, g, o to i, f, o, g, and zero post-activation biases
        (or none, with post_bias=False)."""
        weight = lstm.weight_ih_l0
        core = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias, lstm.batch_first, lstm.dropout,
                   lstm.bidirectional, lstm.proj_size, device=weight.device, dtype=weight.dtype, post_bias=post_bias)
        core._copy_lstm_parameters(lstm, core)
        with torch.no_grad():
            for name, p in core.named_parameters():
                if name.startswith(("bias_cell", "bias_hidden")):
                    p.zero_()
        return core

    def as_lstm(self):
        """nn.LSTM's parameters, gate blocks reordered to its i, f, g, o: only without post-activation
        biases (`post_bias=False`), which nn.LSTM does not have."""
        if self.post_bias:
            raise ValueError("PostBiasLSTM with post-activation biases cannot run as nn.LSTM, which has none; "
                             "only a core with post_bias=False can")
        return self.hidden_size, self.proj_size, self._lstm_parameters()

    def _lstm_parameters(self):
        return {name: _as_lstm_weight(name, getattr(self, name)) for name in self._lstm_names()}

    def to_lstm(self):
        """The nn.LSTM with this core's function; refuses non-zero post-activation biases, which
        nn.LSTM cannot express."""
        for name, p in self.named_parameters():
            if name.startswith(("bias_cell", "bias_hidden")) and p.detach().abs().max() > 0:
                raise ValueError(f"PostBiasLSTM.to_lstm: {name} is not zero, and nn.LSTM has no biases after the "
                                 "activations; only a core with zero bias_cell_l* and bias_hidden_l* converts")
        return self._lstm_from(self.hidden_size, self.proj_size, self._lstm_parameters())

    def step(self, gates, cells, layer):
        return post_bias_lstm_update(gates, *cells, *self._post_biases(layer))

    def extra_repr(self):
        return super().extra_repr() + ("" if self.post_bias else ", post_bias=False")


class NovoLSTM(_GatedRecurrence):
    """NovoLSTM (docs/MODELS.md, M3): an LSTM whose input gate is normalised, per layer:

        i = LayerNorm(sigmoid(W_i [h(t-1), x(t)] + b_i)) * softmax(W_i' [h(t-1), x(t)] + b_i')
        f, o = sigmoid(W_f|o [h(t-1), x(t)] + b_f|o)      g = tanh(W_g [h(t-1), x(t)] + b_g)
        c(t) = f * c(t-1) + i * g                          h(t) = o * tanh(c(t))

    (softmax and LayerNorm over the H hidden units); with `proj_size`, h(t) = W_hr (o * tanh(c(t))).
    Interface, shapes and parameter names as `nn.LSTM` (see `CerebralLSTM`), state (h, c) with c
    (L*D, B, H). Parameters per layer k: `weight_ih_lk` (5H, in_k), `weight_hh_lk` (5H, R), with
    bias `bias_ih_lk`, `bias_hh_lk` (5H), in gate blocks i, i', f, o, g, with proj_size
    `weight_hr_lk` (R, H); the LayerNorm's scale `norm_weight_lk` (H, ones) and shift `norm_bias_lk` (H, zeros). Runs on the
    equation path."""

    num_gates = 5
    fused = False

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)
        for k in self._layer_keys():  # LayerNorm starts as the identity
            setattr(self, f"norm_weight_l{k}", nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype)))
            setattr(self, f"norm_bias_l{k}", nn.Parameter(torch.zeros(hidden_size, device=device, dtype=dtype)))

    def reset_parameters(self):
        lstm_uniform_(self)
        for name, p in self.named_parameters():
            if name.startswith("norm_"):
                nn.init.ones_(p) if name.startswith("norm_weight") else nn.init.zeros_(p)

    def step(self, gates, cells, layer):
        return novo_lstm_update(gates, *cells, getattr(self, f"norm_weight_l{layer}"),
                                getattr(self, f"norm_bias_l{layer}"))
