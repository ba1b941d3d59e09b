"""The fast path of the Cerebral and post-bias cores: one autograd Function per layer over all
time steps (`FusedLayer`), with a hand-written backward, and the GEMM helpers it runs on.

On the CPU in fp32 every GEMM of the layer goes to oneDNN (`torch.ops.mkldnn._linear_pointwise`,
the private op inductor uses; the library `nn.LSTM` itself runs on), which is about 30% faster
than `addmm`'s sgemm at one step's shapes and fuses the addition of the input projection into
the recurrent GEMM. Elsewhere (CUDA, float64, bf16 operands) the same code uses `addmm` and
`F.linear`, so float64 gradcheck covers the math. `cerebral/cores.py` holds the equations this
path is tested against.

Steps are laid out as in a `PackedSequence`: the rows of step t follow those of step t-1, and
step t has `batch_sizes[t]` rows, the sequences still running, longest first. A fixed-length
batch is the case of equal batch sizes, a (T, B, ...) tensor viewed as (T * B, ...).
"""

import itertools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from cerebral.elementwise import kernel_ops
from cerebral.precision import onednn_has_bf16


def _onednn(x):
    """Whether x's GEMMs go to oneDNN, the library `nn.LSTM` runs on: on the CPU in fp32 it is
    about 30% faster than `addmm`'s sgemm at one step's shapes (128 x 512 by 512 x 4096). Not
    under torch.compile, whose inductor picks its own GEMMs (and cannot lower these ops)."""
    return (not torch.compiler.is_compiling() and x.device.type == "cpu" and x.dtype == torch.float32
            and torch.backends.mkldnn.is_available())


def _linear(x, weight, bias=None):
    """x @ weight^T + bias, for a 2-D x (and a weight in oneDNN's packed layout, `_packed`)."""
    if _onednn(x) or weight.is_mkldnn:
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


def _packed(weight, rows):
    """weight in oneDNN's own layout for products with `rows` rows, where oneDNN runs weight's dtype
    on the CPU (float32, bfloat16): the sequence kernel's per-step GEMMs then skip the reorder
    oneDNN otherwise does at every call (about 10% of a step's GEMM at paper shapes, same bits)."""
    if (weight.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and (weight.dtype == torch.float32 or (weight.dtype == torch.bfloat16 and onednn_has_bf16()))):
        return torch.ops.mkldnn._reorder_linear_weight(weight, rows)
    return weight


def _weight_grad(d, x):
    """d^T @ x, a weight's gradient from a GEMM's (N, out) output gradients d and (N, in) inputs x.
    On oneDNN it is computed as (x^T @ d)^T and returned as that transposed view, d read transposed
    where it lies: on a Zen 5 EPYC at the input projection's shapes (2560 x 4096 and 2560 x 512)
    half of sgemm's time for d^T @ x, where a transposed copy of d would cost most of the gain."""
    if _onednn(d):
        return torch.ops.mkldnn._linear_pointwise(x.t().contiguous(), d.t(), None, "none", [], "").t()
    return d.t() @ x


def step_rows(batch_sizes):
    """(first row, number of rows) of each step in the packed layout."""
    return list(zip(itertools.accumulate([0, *batch_sizes[:-1]]), batch_sizes, strict=True))


def last_rows(batch_sizes):
    """Where each sequence's last step is, sequences in the packed order: a slice when all have the
    same length, else an index tensor."""
    if min(batch_sizes) == max(batch_sizes):
        return slice(sum(batch_sizes) - batch_sizes[0], None)
    rows = []
    for (start, size), next_size in zip(step_rows(batch_sizes), [*batch_sizes[1:], 0], strict=True):
        rows[:0] = range(start + next_size, start + size)  # these sequences end at this step
    return torch.tensor(rows)


def _previous_rows(batch_sizes):
    """For each row, the row of the same sequence one step earlier in [initial state rows, then
    the rows of the steps]: a slice when all sequences have the same length."""
    batch = batch_sizes[0]
    if min(batch_sizes) == max(batch_sizes):
        return slice(0, sum(batch_sizes))
    starts = [0] + [batch + start for start, _ in step_rows(batch_sizes)[:-1]]
    return torch.cat([torch.arange(start, start + size) for start, size in zip(starts, batch_sizes, strict=True)])


class FusedLayer(torch.autograd.Function):
    """One layer over all time steps for P LSTM paths that share the hidden state:

        i, f, o, g = sigmoid, sigmoid, sigmoid, tanh of (xz[t] + h(t-1) W_hh^T)  (each P*H wide)
        c(t) = f * c(t-1) + i * g  [+ b_c]
        h(t) = sum over the P paths of o * tanh(c(t))  [+ b_h],  then [W_hr h(t)]

    P = 2 is the Cerebral LSTM, P = 1 with b_c, b_h the post-bias LSTM; W_hr is the projection of
    a projected LSTM (`proj_size`). The input projection xz = x W_ih^T + b of every step is one
    GEMM; gate blocks are i, f, o, g so that one sigmoid covers i, f, o and one tanh covers g,
    each block holding the P paths. Forward keeps the activated gates and tanh(c); backward walks
    the steps once for the gate gradients and computes each weight's gradient as one GEMM over
    all steps.

    x is (N, input) in the packed layout of `batch_sizes` (module docstring); h0 and c0 hold the
    B = batch_sizes[0] sequences. Returns the output rows (N, H or proj) and each sequence's last
    cell state (B, P*H).

    `gemm_dtype` (e.g. bfloat16, from autocast) gives every GEMM operand that dtype, forward and
    backward; each product is rounded to it and everything else (gates, cell states, h, the
    gradients returned) stays in the inputs' dtype. Where the C++ kernels apply (CPU, float32 or
    float64 inputs; cerebral/elementwise.py), `elementwise` "seq" runs the whole loop over the steps
    in C++ and "cpp" each step's elementwise work; "aten" does that work in ATen calls.
    """

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, h0, c0, bias_cell, bias_hidden, w_hr, batch_sizes, gemm_dtype=None,
                elementwise="aten"):
        ops = _kernel(elementwise, x)
        # the sequence kernel's dtypes: GEMMs in x's own, or bf16 operands for fp32 gates (autocast)
        ctx.sequence = (elementwise == "seq" and ops is not None and h0.dtype == c0.dtype == x.dtype
                        and (gemm_dtype in (None, x.dtype) or (gemm_dtype, x.dtype) == (torch.bfloat16, torch.float32)))
        if ctx.sequence:
            return _sequence_forward(ctx, ops, x, w_ih, bias, w_hh, h0, c0, bias_cell, bias_hidden, w_hr, batch_sizes,
                                     gemm_dtype or x.dtype)
        rows, total, batch, gate_width = step_rows(batch_sizes), x.shape[0], h0.shape[0], w_ih.shape[0]
        x_g, w_ih_g, w_hh_g, w_hr_g = _gemm_operands(gemm_dtype or x.dtype, x, w_ih, w_hh, w_hr)
        if gemm_dtype in (None, x.dtype):
            xz = _linear(x, w_ih, bias)
        else:  # the operands rounded to gemm_dtype, the bias added in full precision
            xz = _linear(x_g, w_ih_g).to(x.dtype)
            if bias is not None:
                xz.add_(bias)
        width = gate_width // 4
        hidden = w_hr.shape[1] if w_hr is not None else h0.shape[-1]
        gates = []  # activated i, f, o, g of each step
        cells = xz.new_empty(batch + total, width)  # c0, then c(t) of every row
        cells[:batch] = c0
        tanh_cells = xz.new_empty(total, width)
        out = xz.new_empty(total, h0.shape[-1])
        summed = out if w_hr is None else xz.new_empty(total, hidden)  # h before the projection
        ops = ops if elementwise == "cpp" else None
        h, previous = h0, 0  # previous: where the rows of the step before start in `cells`
        for start, size in rows:
            here = slice(start, start + size)
            a = _add_matmul(xz[here], h[:size].to(w_hh_g.dtype), w_hh_g)
            gates.append(a)
            c_prev, c, h = cells[previous : previous + size], cells[batch + start : batch + start + size], summed[here]
            if ops is not None:  # the gates activated in a, c(t), tanh(c(t)) and h(t) in one pass
                ops.gates_forward(a, c_prev, c, tanh_cells[here], h, bias_cell, bias_hidden)
            else:
                _gates_forward(a, c_prev, c, tanh_cells[here], h, hidden, bias_cell, bias_hidden)
            if w_hr is not None:
                out[here] = _linear(h.to(w_hr_g.dtype), w_hr_g)
                h = out[here]
            previous = batch + start
        _keep_for_backward(ctx, (x_g, w_ih_g, w_hh_g, w_hr_g, h0, out, summed, cells, tanh_cells, *gates), x, w_ih,
                           (bias, bias_cell, bias_hidden), batch_sizes, ops)
        return out, _last_cells(cells, batch, batch_sizes)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_c_last):
        if ctx.sequence:
            return _sequence_backward(ctx, d_out, d_c_last)
        x, w_ih, w_hh, w_hr, h0, out, summed, cells, tanh_cells, *gates = ctx.saved_tensors  # x, weights as in the GEMMs
        gemm, (x_dtype, w_dtype) = w_hh.dtype, ctx.dtypes
        rows, batch, gate_width = step_rows(ctx.batch_sizes), h0.shape[0], gates[0].shape[1]
        width, hidden = gate_width // 4, summed.shape[1]
        paths = width // hidden
        d_gates = gates[0].new_empty(len(x), gate_width)
        has_bias, has_bias_cell, has_bias_hidden = ctx.biases
        d_bias_cell = h0.new_zeros(width) if has_bias_cell else None
        d_bias_hidden = h0.new_zeros(hidden) if has_bias_hidden else None
        d_h_projected = d_out.new_empty(d_out.shape) if w_hr is not None else None  # dL/dh(t) of each row
        w_hr_t = w_hr.t().contiguous() if w_hr is not None else None
        # dL/dc(t), carried back through the steps; row j = sequence j
        dc_all = d_c_last.clone(memory_format=torch.contiguous_format)
        start, size = rows[-1]
        dh = d_out[start : start + size]  # dL/dh(t) in full (autograd passes zeros for unused outputs)
        w_hh_t = w_hh.t().contiguous()  # the weight of dL/dh(t-1) = d_gates(t) @ w_hh

        for t in reversed(range(len(rows))):
            start, size = rows[t]
            here = slice(start, start + size)
            previous = batch + rows[t - 1][0] if t > 0 else 0
            if w_hr is not None:  # through the projection to the sum of the paths
                d_h_projected[here] = dh
                dh = _linear(dh.to(gemm), w_hr_t).to(x_dtype)
            a, d_a, dc = gates[t], d_gates[here], dc_all[:size]
            if ctx.kernel is not None:  # d_a, dc -> dL/dc(t-1) and the post-bias gradients in one pass
                ctx.kernel.gates_backward(a, cells[previous : previous + size], tanh_cells[here], dh.contiguous(), dc,
                                          d_a, d_bias_cell, d_bias_hidden)
            else:
                _gates_backward(a, d_a, dc, dh, cells[previous : previous + size], tanh_cells[here], paths, hidden,
                                d_bias_cell, d_bias_hidden)
            if t > 0:
                d_out_before = d_out[rows[t - 1][0] : rows[t - 1][0] + rows[t - 1][1]]
                dh = _add_matmul(d_out_before[:size], d_a.to(gemm), w_hh_t)
                if len(d_out_before) > size:  # the sequences that ended at step t-1
                    dh = torch.cat([dh, d_out_before[size:]])
            else:
                dh0 = _linear(d_a.to(gemm), w_hh_t).to(h0.dtype)
        d_xz = d_gates
        d_bias = d_xz.sum(0) if has_bias else None
        d_xz = d_xz.to(gemm)
        h_before = torch.cat([h0, out])[_previous_rows(ctx.batch_sizes)].to(gemm)  # h(t-1) of each row
        d_x = _linear(d_xz, w_ih.t().contiguous()).to(x_dtype) if ctx.needs_input_grad[0] else None
        d_w_ih, d_w_hh = _weight_grad(d_xz, x).to(w_dtype), _weight_grad(d_xz, h_before).to(w_dtype)
        d_w_hr = _weight_grad(d_h_projected.to(gemm), summed.to(gemm)).to(w_dtype) if w_hr is not None else None
        return d_x, d_w_ih, d_bias, d_w_hh, dh0, dc_all, d_bias_cell, d_bias_hidden, d_w_hr, None, None, None


def _gemm_operands(gemm, *tensors):
    """The GEMMs' operands in `gemm` (a tensor already in it is itself); None stays None."""
    return tuple(t.to(gemm) if t is not None else None for t in tensors)


def _keep_for_backward(ctx, tensors, x, w_ih, biases, batch_sizes, ops):
    """What both forwards keep for their backward: tensors, dtypes, which biases exist, the layout."""
    ctx.save_for_backward(*tensors)
    ctx.dtypes = x.dtype, w_ih.dtype
    ctx.biases = tuple(b is not None for b in biases)
    ctx.batch_sizes, ctx.kernel = batch_sizes, ops


def _last_cells(cells, batch, batch_sizes):
    """Each sequence's last cell state from `cells` (the B initial rows, then every step's)."""
    last = last_rows(batch_sizes)
    c_last = cells[batch:][last]
    return c_last.clone() if isinstance(last, slice) else c_last


def _kernel(elementwise, x):
    """The C++ kernels' ops where `elementwise` asks for them and they apply to x, or None."""
    if (elementwise in ("cpp", "seq") and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.compiler.is_compiling()):  # no fake kernel for inductor's tracing
        return kernel_ops()
    return None


def _sequence_forward(ctx, ops, x, w_ih, bias, w_hh, h0, c0, bias_cell, bias_hidden, w_hr, batch_sizes, gemm):
    """FusedLayer.forward with the time loop in C++ (`layer_forward`, cerebral/csrc/sequence.cpp):
    the input projection stays in `gemm` (its bias added by the kernel in full precision), and h of
    every step is kept in `gemm` too, as the recurrent GEMMs and the weight gradients read it."""
    total, batch, gate_width = x.shape[0], h0.shape[0], w_ih.shape[0]
    width, hidden = gate_width // 4, w_hr.shape[1] if w_hr is not None else h0.shape[-1]
    x_g, w_ih_g, w_hh_g, w_hr_g = _gemm_operands(gemm, x, w_ih, w_hh, w_hr)
    xz = _linear(x_g, w_ih_g)
    h_all = x_g.new_empty(batch + total, h0.shape[-1])  # h0, then h(t) of every row, in gemm
    h_all[:batch] = h0
    cells = x.new_empty(batch + total, width)  # c0, then c(t) of every row
    cells[:batch] = c0
    gates, tanh_cells = x.new_empty(total, gate_width), x.new_empty(total, width)
    summed = x.new_empty(total, hidden)  # h before the projection
    projected = w_hr is not None
    out = x.new_empty(total, h0.shape[-1]) if projected else None
    summed_gemm = x_g.new_empty(total, hidden) if projected else None  # what the projection reads
    ops.layer_forward(xz, bias if bias is not None else x.new_zeros(gate_width), _packed(w_hh_g, batch), w_hr_g, h_all,
                      cells, gates, tanh_cells, summed, out, summed_gemm, bias_cell, bias_hidden, list(batch_sizes))
    _keep_for_backward(ctx, (x_g, w_ih_g, w_hh_g, w_hr_g, h0, h_all, cells, gates, tanh_cells, summed_gemm), x, w_ih,
                       (bias, bias_cell, bias_hidden), batch_sizes, ops)
    return out if projected else summed, _last_cells(cells, batch, batch_sizes)


def _sequence_backward(ctx, d_out, d_c_last):
    """FusedLayer.backward with the time loop in C++ (`layer_backward`): the gate gradients come
    back in the GEMMs' dtype, the input bias's gradient summed by the kernel."""
    x, w_ih, w_hh, w_hr, h0, h_all, cells, gates, tanh_cells, summed_gemm = ctx.saved_tensors
    (x_dtype, w_dtype), (has_bias, has_bias_cell, has_bias_hidden) = ctx.dtypes, ctx.biases
    gate_width, hidden = gates.shape[1], summed_gemm.shape[1] if w_hr is not None else h0.shape[-1]
    d_out = d_out.contiguous()
    dc_all = d_c_last.clone(memory_format=torch.contiguous_format)  # dL/dc(t) back through the steps, then dL/dc0
    d_gates = gates.new_empty(gates.shape, dtype=w_hh.dtype)
    dh0 = h0.new_empty(h0.shape)  # contiguous, whatever h0's strides
    d_bias = gates.new_zeros(gate_width) if has_bias else None
    d_bias_cell = gates.new_zeros(dc_all.shape[1]) if has_bias_cell else None
    d_bias_hidden = gates.new_zeros(hidden) if has_bias_hidden else None
    d_projected = torch.empty_like(d_out) if w_hr is not None else None
    ctx.kernel.layer_backward(gates, cells, tanh_cells, d_out, dc_all, _packed(w_hh.t().contiguous(), len(h0)),
                              w_hr.t().contiguous() if w_hr is not None else None, d_gates, dh0, d_bias, d_bias_cell,
                              d_bias_hidden, d_projected, list(ctx.batch_sizes))
    d_x = _linear(d_gates, w_ih.t().contiguous()).to(x_dtype) if ctx.needs_input_grad[0] else None
    h_before = h_all[_previous_rows(ctx.batch_sizes)]
    d_w_ih, d_w_hh = _weight_grad(d_gates, x).to(w_dtype), _weight_grad(d_gates, h_before).to(w_dtype)
    d_w_hr = _weight_grad(d_projected.to(w_hh.dtype), summed_gemm).to(w_dtype) if w_hr is not None else None
    return d_x, d_w_ih, d_bias, d_w_hh, dh0, dc_all, d_bias_cell, d_bias_hidden, d_w_hr, None, None, None


def _gates_forward(a, c_prev, c, tanh_c, h, hidden, bias_cell, bias_hidden):
    """One step's elementwise forward in ATen calls (the kernel's gates_forward): the gate
    pre-activations a activated in place, c(t), tanh(c(t)) and h(t), the sum over the paths,
    written into c, tanh_c and h."""
    width = c.shape[1]
    a[:, : 3 * width].sigmoid_()
    a[:, 3 * width :].tanh_()
    i, f, o, g = a.split(width, dim=1)
    torch.mul(f, c_prev, out=c)
    c.addcmul_(i, g)
    if bias_cell is not None:
        c.add_(bias_cell)
    torch.tanh(c, out=tanh_c)
    torch.mul(o[:, :hidden], tanh_c[:, :hidden], out=h)
    for p in range(hidden, width, hidden):  # the other paths' o * tanh(c), summed into h
        h.addcmul_(o[:, p : p + hidden], tanh_c[:, p : p + hidden])
    if bias_hidden is not None:
        h.add_(bias_hidden)


def _gates_backward(a, d_a, dc, dh, c_prev, tanh_c, paths, hidden, d_bias_cell, d_bias_hidden):
    """One step's elementwise backward in ATen calls, into d_a and dc (the kernel's gates_backward):
    from the activated gates a, dL/dh(t) and dL/dc(t) from step t+1 in dc, the gradients of the
    gate pre-activations, dL/dc(t-1) through this step, and the post-bias gradients added."""
    def by_path(x):  # h is shared: broadcast its gradient over the paths
        return x.view(-1, paths, hidden)

    width = paths * hidden
    i, f, o, g = a.split(width, dim=1)
    d_i, d_f, d_o, d_g = d_a.split(width, dim=1)
    dh_paths, tanh_c = dh.unsqueeze(1), by_path(tanh_c)
    torch.mul(dh_paths, tanh_c, out=by_path(d_o))
    by_path(dc).add_(torch.ops.aten.tanh_backward(dh_paths * by_path(o), tanh_c))
    if d_bias_cell is not None:
        d_bias_cell += dc.sum(0)
    if d_bias_hidden is not None:
        d_bias_hidden += dh.sum(0)
    torch.mul(dc, g, out=d_i)
    torch.mul(dc, c_prev, out=d_f)
    torch.mul(dc, i, out=d_g)
    dc.mul_(f)
    torch.ops.aten.sigmoid_backward(d_a[:, : 3 * width], a[:, : 3 * width], grad_input=d_a[:, : 3 * width])
    torch.ops.aten.tanh_backward(d_g, g, grad_input=d_g)
