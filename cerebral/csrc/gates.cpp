// The elementwise work of one time step of `FusedLayer` (cerebral/fused.py) in one pass over
// memory: the gate activations, the cell update and the summed hidden state forward, and their
// gradients backward. The GEMMs stay in PyTorch; between two of them these kernels replace the
// dozen ATen calls of a step, each of which reads and writes the gate buffers once.
//
// Layout (as in FusedLayer): `gates` is (rows, 4W), blocks i, f, o, g of width W = P * H, each
// block holding the P paths side by side; cells are (rows, W); h is (rows, H), the sum over the
// paths. Every kernel is split over columns of H (each worker owns the same columns of every path
// and every row), so the sums over rows (the post-activation bias gradients) are taken in row
// order whatever the number of threads: the results do not depend on it.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>

#include "activations.h"
#include "checks.h"

namespace {

using cerebral::check_matrix;
using cerebral::check_vector;
using cerebral::sigmoid;
using cerebral::tanh;

// One path's columns of one row, forward: the gates activated in place, c = f * c_prev + i * g
// [+ b_c] and tanh(c). (Restrict-qualified parameters, so that the compiler vectorises the loop.)
template <typename T, bool kBiases>
void forward_span(T* __restrict i, T* __restrict f, T* __restrict o, T* __restrict g, const T* __restrict c_prev,
                  const T* __restrict bias_cell, T* __restrict c, T* __restrict tanh_c, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const T gi = sigmoid(i[k]), gf = sigmoid(f[k]), go = sigmoid(o[k]), gg = tanh(g[k]);
    i[k] = gi, f[k] = gf, o[k] = go, g[k] = gg;
    T cell = gf * c_prev[k] + gi * gg;
    if constexpr (kBiases) cell += bias_cell[k];
    c[k] = cell;
    tanh_c[k] = tanh(cell);
  }
}

// One row's h over columns [0, n) of H: the sum over the paths of o * tanh(c) [+ b_h].
template <typename T, bool kBiases>
void sum_paths(const T* __restrict o, const T* __restrict tanh_c, const T* __restrict bias_hidden, T* __restrict h,
               int64_t n, int64_t hidden, int64_t paths) {
  for (int64_t k = 0; k < n; ++k) h[k] = o[k] * tanh_c[k];
  for (int64_t p = 1; p < paths; ++p) {
    for (int64_t k = 0; k < n; ++k) h[k] += o[k + p * hidden] * tanh_c[k + p * hidden];
  }
  if constexpr (kBiases) {
    for (int64_t k = 0; k < n; ++k) h[k] += bias_hidden[k];
  }
}

// One path's columns of one row, backward: from dL/dh(t) and dL/dc(t) (from step t+1, in dc) the
// gradients of the gate pre-activations, dL/dc(t-1) through this step (into dc), and dL/dc(t)
// added to the b_c gradient.
template <typename T, bool kBiases>
void backward_span(const T* __restrict i, const T* __restrict f, const T* __restrict o, const T* __restrict g,
                   const T* __restrict c_prev, const T* __restrict tanh_c, const T* __restrict dh, T* __restrict dc,
                   T* __restrict d_i, T* __restrict d_f, T* __restrict d_o, T* __restrict d_g,
                   T* __restrict d_bias_cell, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const T gi = i[k], gf = f[k], go = o[k], gg = g[k], tc = tanh_c[k];
    const T dcell = dc[k] + dh[k] * go * (T(1) - tc * tc);
    if constexpr (kBiases) d_bias_cell[k] += dcell;
    d_i[k] = dcell * gg * gi * (T(1) - gi);
    d_f[k] = dcell * c_prev[k] * gf * (T(1) - gf);
    d_o[k] = dh[k] * tc * go * (T(1) - go);
    d_g[k] = dcell * gi * (T(1) - gg * gg);
    dc[k] = dcell * gf;
  }
}

constexpr int64_t kGrain = 16;  // columns of H a worker takes at least

template <typename T, bool kBiases>
void forward_kernel(at::Tensor& gates, const at::Tensor& c_prev, at::Tensor& c, at::Tensor& tanh_c, at::Tensor& h,
                    const std::optional<at::Tensor>& bias_cell, const std::optional<at::Tensor>& bias_hidden) {
  const int64_t rows = gates.size(0), width = c.size(1), hidden = h.size(1), paths = width / hidden;
  T* a = gates.data_ptr<T>();
  const T* cp = c_prev.data_ptr<T>();
  T* cc = c.data_ptr<T>();
  T* tc = tanh_c.data_ptr<T>();
  T* hh = h.data_ptr<T>();
  const T* bc = kBiases ? bias_cell->data_ptr<T>() : nullptr;
  const T* bh = kBiases ? bias_hidden->data_ptr<T>() : nullptr;
  at::parallel_for(0, hidden, kGrain, [=](int64_t begin, int64_t end) {
    for (int64_t row = 0; row < rows; ++row) {
      T* gate_row = a + row * 4 * width;
      for (int64_t p = 0; p < paths; ++p) {
        const int64_t k = p * hidden + begin, cell = row * width + k;
        forward_span<T, kBiases>(gate_row + k, gate_row + width + k, gate_row + 2 * width + k, gate_row + 3 * width + k,
                                 cp + cell, bc + (kBiases ? k : 0), cc + cell, tc + cell, end - begin);
      }
      sum_paths<T, kBiases>(gate_row + 2 * width + begin, tc + row * width + begin, bh + (kBiases ? begin : 0),
                            hh + row * hidden + begin, end - begin, hidden, paths);
    }
  });
}

template <typename T, bool kBiases>
void backward_kernel(const at::Tensor& gates, const at::Tensor& c_prev, const at::Tensor& tanh_c, const at::Tensor& dh,
                     at::Tensor& dc, at::Tensor& d_gates, const std::optional<at::Tensor>& d_bias_cell,
                     const std::optional<at::Tensor>& d_bias_hidden) {
  const int64_t rows = gates.size(0), width = dc.size(1), hidden = dh.size(1), paths = width / hidden;
  const T* a = gates.data_ptr<T>();
  const T* cp = c_prev.data_ptr<T>();
  const T* tc = tanh_c.data_ptr<T>();
  const T* dhh = dh.data_ptr<T>();
  T* dcc = dc.data_ptr<T>();
  T* da = d_gates.data_ptr<T>();
  T* dbc = kBiases ? d_bias_cell->data_ptr<T>() : nullptr;
  T* dbh = kBiases ? d_bias_hidden->data_ptr<T>() : nullptr;
  at::parallel_for(0, hidden, kGrain, [=](int64_t begin, int64_t end) {
    for (int64_t row = 0; row < rows; ++row) {
      const T* gate_row = a + row * 4 * width;
      T* d_row = da + row * 4 * width;
      const T* d_h = dhh + row * hidden + begin;
      for (int64_t p = 0; p < paths; ++p) {  // h is shared: every path reads its gradient
        const int64_t k = p * hidden + begin, cell = row * width + k;
        backward_span<T, kBiases>(gate_row + k, gate_row + width + k, gate_row + 2 * width + k,
                                  gate_row + 3 * width + k, cp + cell, tc + cell, d_h, dcc + cell, d_row + k,
                                  d_row + width + k, d_row + 2 * width + k, d_row + 3 * width + k,
                                  dbc + (kBiases ? k : 0), end - begin);
      }
      if constexpr (kBiases) {
        for (int64_t k = begin; k < end; ++k) dbh[k] += dhh[row * hidden + k];
      }
    }
  });
}

// What both kernels read alike: gates (rows, 4W), c(t-1) and tanh(c(t)) (rows, W), and the two
// post-bias vectors (or their gradients), both or neither.
void check_step(const at::Tensor& gates, const at::Tensor& c_prev, const at::Tensor& tanh_c, int64_t width,
                int64_t hidden, const std::optional<at::Tensor>& bias_cell, const std::optional<at::Tensor>& bias_hidden) {
  TORCH_CHECK(gates.dim() == 2 && gates.size(1) == 4 * width, "gates: shape (rows, 4 * ", width, ") expected");
  TORCH_CHECK(hidden > 0 && width % hidden == 0, "the cell width ", width, " is not a multiple of hidden ", hidden);
  TORCH_CHECK(gates.scalar_type() == at::kFloat || gates.scalar_type() == at::kDouble, "gates: float or double expected");
  check_matrix(gates, gates.scalar_type(), gates.size(0), 4 * width, "gates");
  check_matrix(c_prev, gates.scalar_type(), gates.size(0), width, "c_prev");
  check_matrix(tanh_c, gates.scalar_type(), gates.size(0), width, "tanh_c");
  check_vector(bias_cell, gates.scalar_type(), width, "bias_cell");
  check_vector(bias_hidden, gates.scalar_type(), hidden, "bias_hidden");
  TORCH_CHECK(bias_cell.has_value() == bias_hidden.has_value(), "bias_cell and bias_hidden: both or neither");
}

void gates_forward(at::Tensor gates, const at::Tensor& c_prev, at::Tensor c, at::Tensor tanh_c, at::Tensor h,
                   const std::optional<at::Tensor>& bias_cell, const std::optional<at::Tensor>& bias_hidden) {
  const int64_t width = c.size(1), hidden = h.size(1);
  check_step(gates, c_prev, tanh_c, width, hidden, bias_cell, bias_hidden);
  check_matrix(c, gates.scalar_type(), gates.size(0), width, "c");
  check_matrix(h, gates.scalar_type(), gates.size(0), hidden, "h");
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "gates_forward", [&] {
    if (bias_cell.has_value()) {
      forward_kernel<scalar_t, true>(gates, c_prev, c, tanh_c, h, bias_cell, bias_hidden);
    } else {
      forward_kernel<scalar_t, false>(gates, c_prev, c, tanh_c, h, bias_cell, bias_hidden);
    }
  });
}

void gates_backward(const at::Tensor& gates, const at::Tensor& c_prev, const at::Tensor& tanh_c, const at::Tensor& dh,
                    at::Tensor dc, at::Tensor d_gates, const std::optional<at::Tensor>& d_bias_cell,
                    const std::optional<at::Tensor>& d_bias_hidden) {
  const int64_t width = dc.size(1), hidden = dh.size(1);
  check_step(gates, c_prev, tanh_c, width, hidden, d_bias_cell, d_bias_hidden);
  check_matrix(dh, gates.scalar_type(), gates.size(0), hidden, "dh");
  check_matrix(dc, gates.scalar_type(), gates.size(0), width, "dc");
  check_matrix(d_gates, gates.scalar_type(), gates.size(0), 4 * width, "d_gates");
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "gates_backward", [&] {
    if (d_bias_cell.has_value()) {
      backward_kernel<scalar_t, true>(gates, c_prev, tanh_c, dh, dc, d_gates, d_bias_cell, d_bias_hidden);
    } else {
      backward_kernel<scalar_t, false>(gates, c_prev, tanh_c, dh, dc, d_gates, d_bias_cell, d_bias_hidden);
    }
  });
}

}  // namespace

TORCH_LIBRARY(cerebral, m) {
  m.def("gates_forward(Tensor(a!) gates, Tensor c_prev, Tensor(b!) c, Tensor(c!) tanh_c, Tensor(d!) h, "
        "Tensor? bias_cell, Tensor? bias_hidden) -> ()");
  m.def("gates_backward(Tensor gates, Tensor c_prev, Tensor tanh_c, Tensor dh, Tensor(a!) dc, Tensor(b!) d_gates, "
        "Tensor(c!)? d_bias_cell, Tensor(d!)? d_bias_hidden) -> ()");
}

TORCH_LIBRARY_IMPL(cerebral, CPU, m) {
  m.impl("gates_forward", gates_forward);
  m.impl("gates_backward", gates_backward);
}
