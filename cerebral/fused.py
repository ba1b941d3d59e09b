"""The fast path of the Cerebral and post-bias cores: one autograd Function per layer over all
time steps (`FusedLayer`), with a hand-written backward, and the GEMM helpers it runs on.

On the CPU in fp32 every GEMM of the layer goes to oneDNN (`torch.ops.mkldnn._linear_pointwise`,
the private op inductor uses; the library `nn.LSTM` itself runs on), which is about 30% faster
than `addmm`'s sgemm at one step's shapes and fuses the addition of the input projection into
the recurrent GEMM. Elsewhere (CUDA, float64, bf16 operands) the same code uses `addmm` and
`F.linear`, so float64 gradcheck covers the math. `cerebral/cores.py` holds the equations this
path is tested against.
"""

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


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

        def by_path(x):  # h is shared: broadcast its gradient over the paths
            return x.view(batch, paths, hidden)

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
