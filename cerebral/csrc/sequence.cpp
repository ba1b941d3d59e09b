// The whole time loop of one `FusedLayer` (cerebral/fused.py) in C++, train.elementwise=seq:
// per step forward, one GEMM h(t-1) W_hh^T into a buffer and one pass that adds the input
// projection (and its bias) to it, activates the gates, updates the cell, sums the paths into
// h(t), and writes h(t) both in full precision and in the GEMMs' dtype for the next GEMM;
// backward, per step, one pass for the gate gradients (written in the GEMMs' dtype, the input
// bias's gradient summed on the way) and one GEMM for dL/dh(t-1). No per-step Python, dispatch
// through Python, or cast of its own: the casts ride in the passes.
//
// Dtypes: T, the gates' and cells' (float or double); G, the GEMM operands' (T itself, or bf16
// under autocast, stored as raw bits). A product in G is rounded to G and added in T, as the
// ATen path does. Layout as in gates.cpp (blocks i, f, o, g of width W = P * H, each holding the
// P paths side by side) and steps as in a PackedSequence (fused.py's module docstring). The
// passes split the H columns over the workers, each owning the same columns of every path, row
// and step: every sum over rows (the bias gradients) is taken in one order whatever the number
// of threads. The GEMMs are oneDNN's (float32, as fused.py's `_linear`) or ATen's `mm`.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <bit>
#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "activations.h"
#include "checks.h"

namespace {

using at::Tensor;
using cerebral::check_cpu;
using cerebral::check_matrix;
using cerebral::check_shape;
using cerebral::check_vector;
using cerebral::sigmoid;
using cerebral::tanh;
using Bf16 = uint16_t;  // bfloat16's bits

inline float widen(Bf16 x) { return std::bit_cast<float>(static_cast<uint32_t>(x) << 16); }
inline float widen(float x) { return x; }
inline double widen(double x) { return x; }

// float to bfloat16, rounding to nearest even as c10::BFloat16 does (a NaN stays a quiet NaN),
// written without a branch so that the loops around it vectorise.
template <typename G, typename T>
inline G narrow(T x) {
  if constexpr (std::is_same_v<G, Bf16>) {
    const uint32_t bits = std::bit_cast<uint32_t>(x);
    const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    return static_cast<Bf16>(x != x ? 0x7FC0u : rounded);
  } else {
    return x;
  }
}

template <typename G>
G* bits(const Tensor& t) {
  return reinterpret_cast<G*>(t.data_ptr());
}

// x @ w^T for the 2-D operands of one step: oneDNN where w is in its packed layout (float32 or
// bf16; fused.py packs it once per layer) or x is float32 (as fused.py's `_linear`), returning
// its own result; at::mm into `scratch`'s first rows otherwise.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& scratch) {
  if (w.is_mkldnn() || (x.scalar_type() == at::kFloat && at::hasMKLDNN())) {
    using Scalars = c10::List<std::optional<c10::Scalar>>;
    static const auto onednn = c10::Dispatcher::singleton()
                                   .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                                   .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                                                 std::string_view, Scalars, std::optional<std::string_view>)>();
    return onednn.call(x, w, std::nullopt, "none", Scalars(), "");
  }
  Tensor out = scratch.narrow(0, 0, x.size(0));
  at::mm_out(out, x, w.t());
  return out;
}

// The columns [begin, end) of H of `rows` rows of one step, forward. xz, prod, h_gemm in G; the
// rest in T. gates gets the activated i, f, o, g; c, tanh_c and h (the sum over the paths) their
// rows; h_gemm h rounded to G.
template <typename T, typename G, bool kPostBiases>
void forward_rows(const G* __restrict xz, const T* __restrict xz_bias, const G* __restrict prod,
                  const T* __restrict c_prev, const T* __restrict bias_cell, const T* __restrict bias_hidden,
                  T* __restrict gates, T* __restrict c, T* __restrict tanh_c, T* __restrict h, G* __restrict h_gemm,
                  int64_t rows, int64_t hidden, int64_t paths, int64_t begin, int64_t end) {
  const int64_t width = paths * hidden;
  for (int64_t row = 0; row < rows; ++row) {
    const G* x_row = xz + row * 4 * width;
    const G* p_row = prod + row * 4 * width;
    T* g_row = gates + row * 4 * width;
    for (int64_t p = 0; p < paths; ++p) {
      for (int64_t k = p * hidden + begin; k < p * hidden + end; ++k) {
        const T pre_i = (widen(x_row[k]) + xz_bias[k]) + widen(p_row[k]);
        const T pre_f = (widen(x_row[width + k]) + xz_bias[width + k]) + widen(p_row[width + k]);
        const T pre_o = (widen(x_row[2 * width + k]) + xz_bias[2 * width + k]) + widen(p_row[2 * width + k]);
        const T pre_g = (widen(x_row[3 * width + k]) + xz_bias[3 * width + k]) + widen(p_row[3 * width + k]);
        const T gi = sigmoid(pre_i), gf = sigmoid(pre_f), go = sigmoid(pre_o), gg = tanh(pre_g);
        g_row[k] = gi, g_row[width + k] = gf, g_row[2 * width + k] = go, g_row[3 * width + k] = gg;
        T cell = gf * c_prev[row * width + k] + gi * gg;
        if constexpr (kPostBiases) cell += bias_cell[k];
        c[row * width + k] = cell;
        tanh_c[row * width + k] = tanh(cell);
      }
    }
    for (int64_t k = begin; k < end; ++k) {
      T sum = g_row[2 * width + k] * tanh_c[row * width + k];
      for (int64_t p = 1; p < paths; ++p) sum += g_row[2 * width + p * hidden + k] * tanh_c[row * width + p * hidden + k];
      if constexpr (kPostBiases) sum += bias_hidden[k];
      h[row * hidden + k] = sum;
      h_gemm[row * hidden + k] = narrow<G>(sum);
    }
  }
}

// The columns [begin, end) of H of `rows` rows of one step, backward: from the activated gates,
// c(t-1), tanh(c(t)), dL/dh(t) and dL/dc(t) (in dc), the gate pre-activations' gradients into
// d_gates (in G), dL/dc(t-1) into dc, and this step's share of the bias gradients added.
template <typename T, typename G, bool kBias, bool kPostBiases>
void backward_rows(const T* __restrict gates, const T* __restrict c_prev, const T* __restrict tanh_c,
                   const T* __restrict dh, T* __restrict dc, G* __restrict d_gates, T* __restrict d_bias,
                   T* __restrict d_bias_cell, T* __restrict d_bias_hidden, int64_t rows, int64_t hidden,
                   int64_t paths, int64_t begin, int64_t end) {
  const int64_t width = paths * hidden;
  for (int64_t row = 0; row < rows; ++row) {
    const T* g_row = gates + row * 4 * width;
    G* d_row = d_gates + row * 4 * width;
    const T* d_h = dh + row * hidden;
    for (int64_t p = 0; p < paths; ++p) {  // h is shared: every path reads its gradient
      for (int64_t k = p * hidden + begin, m = begin; k < p * hidden + end; ++k, ++m) {
        const T gi = g_row[k], gf = g_row[width + k], go = g_row[2 * width + k], gg = g_row[3 * width + k];
        const T tc = tanh_c[row * width + k];
        const T dcell = dc[row * width + k] + d_h[m] * go * (T(1) - tc * tc);
        const T d_i = dcell * gg * gi * (T(1) - gi);
        const T d_f = dcell * c_prev[row * width + k] * gf * (T(1) - gf);
        const T d_o = d_h[m] * tc * go * (T(1) - go);
        const T d_g = dcell * gi * (T(1) - gg * gg);
        d_row[k] = narrow<G>(d_i), d_row[width + k] = narrow<G>(d_f);
        d_row[2 * width + k] = narrow<G>(d_o), d_row[3 * width + k] = narrow<G>(d_g);
        if constexpr (kBias) {
          d_bias[k] += d_i, d_bias[width + k] += d_f, d_bias[2 * width + k] += d_o, d_bias[3 * width + k] += d_g;
        }
        if constexpr (kPostBiases) d_bias_cell[k] += dcell;
        dc[row * width + k] = dcell * gf;
      }
    }
    if constexpr (kPostBiases) {
      for (int64_t k = begin; k < end; ++k) d_bias_hidden[k] += d_h[k];
    }
  }
}

constexpr int64_t kGrain = 16;  // columns of H a worker takes at least

std::vector<std::pair<int64_t, int64_t>> step_rows(c10::IntArrayRef batch_sizes) {
  std::vector<std::pair<int64_t, int64_t>> rows;
  int64_t start = 0;
  for (const int64_t size : batch_sizes) {
    rows.emplace_back(start, size);
    start += size;
  }
  return rows;
}

template <typename T, typename G, bool kPostBiases>
void forward_loop(const Tensor& xz, const Tensor& xz_bias, const Tensor& w_hh, const std::optional<Tensor>& w_hr,
                  const Tensor& h_all, const Tensor& cells, const Tensor& gates, const Tensor& tanh_cells,
                  const Tensor& summed, const std::optional<Tensor>& out, const std::optional<Tensor>& summed_gemm,
                  const std::optional<Tensor>& bias_cell, const std::optional<Tensor>& bias_hidden,
                  c10::IntArrayRef batch_sizes) {
  const int64_t batch = batch_sizes[0], width = cells.size(1), hidden = summed.size(1), paths = width / hidden;
  const Tensor scratch = at::empty({batch, 4 * width}, h_all.options());
  const Tensor proj_scratch = at::empty({batch, h_all.size(1)}, h_all.options());
  const T* bc = kPostBiases ? bias_cell->data_ptr<T>() : nullptr;
  const T* bh = kPostBiases ? bias_hidden->data_ptr<T>() : nullptr;
  int64_t previous = 0;  // where the rows of the step before start in cells and h_all
  for (const auto& [start, size] : step_rows(batch_sizes)) {
    const Tensor prod = linear(h_all.narrow(0, previous, size), w_hh, scratch).contiguous();
    // without a projection the next GEMM reads h in G from h_all; with one, from the projection
    G* h_gemm = w_hr ? bits<G>(*summed_gemm) + start * hidden : bits<G>(h_all) + (batch + start) * hidden;
    const G* x = bits<G>(xz) + start * 4 * width;
    const G* p = bits<G>(prod);
    const T* c_prev = cells.data_ptr<T>() + previous * width;
    T* g = gates.data_ptr<T>() + start * 4 * width;
    T* c = cells.data_ptr<T>() + (batch + start) * width;
    T* tc = tanh_cells.data_ptr<T>() + start * width;
    T* h = summed.data_ptr<T>() + start * hidden;
    const T* xb = xz_bias.data_ptr<T>();
    at::parallel_for(0, hidden, kGrain, [=](int64_t begin, int64_t end) {
      forward_rows<T, G, kPostBiases>(x, xb, p, c_prev, bc, bh, g, c, tc, h, h_gemm, size, hidden, paths, begin, end);
    });
    if (w_hr) {
      const Tensor projected = linear(summed_gemm->narrow(0, start, size), *w_hr, proj_scratch);
      h_all.narrow(0, batch + start, size).copy_(projected);
      out->narrow(0, start, size).copy_(projected);
    }
    previous = batch + start;
  }
}

template <typename T, typename G, bool kBias, bool kPostBiases>
void backward_loop(const Tensor& gates, const Tensor& cells, const Tensor& tanh_cells, const Tensor& d_out,
                   const Tensor& dc_all, const Tensor& w_hh_t, const std::optional<Tensor>& w_hr_t,
                   const Tensor& d_gates, const Tensor& dh0, const std::optional<Tensor>& d_bias,
                   const std::optional<Tensor>& d_bias_cell, const std::optional<Tensor>& d_bias_hidden,
                   const std::optional<Tensor>& d_projected, c10::IntArrayRef batch_sizes) {
  const auto rows = step_rows(batch_sizes);
  const int64_t batch = batch_sizes[0], width = dc_all.size(1), hidden = w_hr_t ? w_hr_t->size(0) : d_out.size(1);
  const int64_t paths = width / hidden, out_width = d_out.size(1);
  const auto gemm = d_gates.options();
  const Tensor scratch = at::empty({batch, out_width}, gemm);
  const Tensor h_scratch = at::empty({batch, hidden}, gemm);
  const Tensor dh_buffer = at::empty({batch, out_width}, d_out.options());  // dL/dh(t), rows = sequences
  const Tensor dh_summed = w_hr_t ? at::empty({batch, hidden}, d_out.options()) : dh_buffer;
  const Tensor dh_gemm = w_hr_t ? at::empty({batch, out_width}, gemm) : Tensor();
  T* db = kBias ? d_bias->data_ptr<T>() : nullptr;
  T* dbc = kPostBiases ? d_bias_cell->data_ptr<T>() : nullptr;
  T* dbh = kPostBiases ? d_bias_hidden->data_ptr<T>() : nullptr;
  dh_buffer.narrow(0, 0, rows.back().second).copy_(d_out.narrow(0, rows.back().first, rows.back().second));
  for (int64_t t = static_cast<int64_t>(rows.size()) - 1; t >= 0; --t) {
    const auto [start, size] = rows[t];
    const int64_t previous = t > 0 ? batch + rows[t - 1].first : 0;
    if (w_hr_t) {  // through the projection to the sum of the paths
      const Tensor dh = dh_buffer.narrow(0, 0, size);
      d_projected->narrow(0, start, size).copy_(dh);
      Tensor dh_g = dh_gemm.narrow(0, 0, size);
      dh_g.copy_(dh);
      dh_summed.narrow(0, 0, size).copy_(linear(dh_g, *w_hr_t, h_scratch));
    }
    const T* g = gates.data_ptr<T>() + start * 4 * width;
    const T* c_prev = cells.data_ptr<T>() + previous * width;
    const T* tc = tanh_cells.data_ptr<T>() + start * width;
    const T* dh = dh_summed.data_ptr<T>();
    T* dc = dc_all.data_ptr<T>();
    G* dg = bits<G>(d_gates) + start * 4 * width;
    at::parallel_for(0, hidden, kGrain, [=](int64_t begin, int64_t end) {
      backward_rows<T, G, kBias, kPostBiases>(g, c_prev, tc, dh, dc, dg, db, dbc, dbh, size, hidden, paths, begin,
                                               end);
    });
    const Tensor d_step = d_gates.narrow(0, start, size);
    if (t > 0) {  // dL/dh(t-1): the output's gradient, and through the gates for the sequences still running
      const auto [before, before_size] = rows[t - 1];
      const Tensor d_out_before = d_out.narrow(0, before, before_size);
      Tensor dh_next = dh_buffer.narrow(0, 0, before_size);
      if (before_size > size) dh_next.narrow(0, size, before_size - size).copy_(d_out_before.narrow(0, size, before_size - size));
      Tensor dh_running = dh_next.narrow(0, 0, size);
      at::add_out(dh_running, d_out_before.narrow(0, 0, size), linear(d_step, w_hh_t, scratch));
    } else {
      dh0.copy_(linear(d_step, w_hh_t, scratch));
    }
  }
}

// The number of rows of all steps; batch_sizes must be positive and non-increasing (a PackedSequence's).
int64_t check_batch_sizes(c10::IntArrayRef batch_sizes) {
  TORCH_CHECK(!batch_sizes.empty(), "batch_sizes: at least one step expected");
  int64_t total = 0;
  for (size_t t = 0; t < batch_sizes.size(); ++t) {
    TORCH_CHECK(batch_sizes[t] > 0 && (t == 0 || batch_sizes[t] <= batch_sizes[t - 1]),
                "batch_sizes: positive and non-increasing expected, got ", batch_sizes);
    total += batch_sizes[t];
  }
  return total;
}

// Dispatch on (T, G): (double, double), (float, float), (float, bf16).
template <typename F>
void dispatch(at::ScalarType full, at::ScalarType gemm, F&& f) {
  if (full == at::kDouble && gemm == at::kDouble) {
    f(double{}, double{});
  } else if (full == at::kFloat && gemm == at::kFloat) {
    f(float{}, float{});
  } else if (full == at::kFloat && gemm == at::kBFloat16) {
    f(float{}, Bf16{});
  } else {
    TORCH_CHECK(false, "layer kernel: gates of ", full, " with GEMMs in ", gemm, " are not supported");
  }
}

void layer_forward(const Tensor& xz, const Tensor& xz_bias, const Tensor& w_hh, const std::optional<Tensor>& w_hr,
                   Tensor h_all, Tensor cells, Tensor gates, Tensor tanh_cells, Tensor summed,
                   const std::optional<Tensor>& out, const std::optional<Tensor>& summed_gemm,
                   const std::optional<Tensor>& bias_cell,
                   const std::optional<Tensor>& bias_hidden, c10::IntArrayRef batch_sizes) {
  const auto full = cells.scalar_type(), gemm = w_hh.scalar_type();
  for (const auto& [t, dtype, name] : {std::tuple{&xz, gemm, "xz"}, {&h_all, gemm, "h_all"}, {&xz_bias, full, "xz_bias"},
                                       {&cells, full, "cells"}, {&gates, full, "gates"}, {&tanh_cells, full, "tanh_cells"},
                                       {&summed, full, "summed"}}) {
    check_cpu(*t, dtype, name);
  }
  TORCH_CHECK(bias_cell.has_value() == bias_hidden.has_value(), "bias_cell and bias_hidden: both or neither");
  TORCH_CHECK(w_hr.has_value() == out.has_value() && w_hr.has_value() == summed_gemm.has_value(),
              "w_hr, out and summed_gemm: all or none");
  const int64_t total = check_batch_sizes(batch_sizes), batch = batch_sizes[0];
  const int64_t width = cells.size(1), hidden = summed.size(1), out_width = w_hr ? w_hr->size(0) : hidden;
  TORCH_CHECK(hidden > 0 && width % hidden == 0, "the cell width ", width, " is not a multiple of hidden ", hidden);
  check_shape(xz, total, 4 * width, "xz");
  check_shape(gates, total, 4 * width, "gates");
  check_shape(cells, batch + total, width, "cells");
  check_shape(tanh_cells, total, width, "tanh_cells");
  check_shape(summed, total, hidden, "summed");
  check_shape(h_all, batch + total, out_width, "h_all");
  check_shape(w_hh, 4 * width, out_width, "w_hh");
  if (w_hr) {
    TORCH_CHECK(w_hr->scalar_type() == gemm && w_hr->dim() == 2 && w_hr->size(1) == hidden, "w_hr: (", out_width,
                ", ", hidden, ") of ", gemm, " expected, got ", w_hr->sizes(), " of ", w_hr->scalar_type());
    check_matrix(*out, full, total, out_width, "out");
    check_matrix(*summed_gemm, gemm, total, hidden, "summed_gemm");
  }
  check_vector(xz_bias, full, 4 * width, "xz_bias");
  check_vector(bias_cell, full, width, "bias_cell");
  check_vector(bias_hidden, full, hidden, "bias_hidden");
  dispatch(full, gemm, [&](auto t, auto g) {
    using T = decltype(t);
    using G = decltype(g);
    if (bias_cell) {
      forward_loop<T, G, true>(xz, xz_bias, w_hh, w_hr, h_all, cells, gates, tanh_cells, summed, out, summed_gemm,
                               bias_cell, bias_hidden, batch_sizes);
    } else {
      forward_loop<T, G, false>(xz, xz_bias, w_hh, w_hr, h_all, cells, gates, tanh_cells, summed, out, summed_gemm,
                                bias_cell, bias_hidden, batch_sizes);
    }
  });
}

void layer_backward(const Tensor& gates, const Tensor& cells, const Tensor& tanh_cells, const Tensor& d_out,
                    Tensor dc_all, const Tensor& w_hh_t, const std::optional<Tensor>& w_hr_t, Tensor d_gates,
                    Tensor dh0, const std::optional<Tensor>& d_bias, const std::optional<Tensor>& d_bias_cell,
                    const std::optional<Tensor>& d_bias_hidden, const std::optional<Tensor>& d_projected,
                    c10::IntArrayRef batch_sizes) {
  const auto full = cells.scalar_type(), gemm = d_gates.scalar_type();
  for (const auto& [t, dtype, name] : {std::tuple{&gates, full, "gates"}, {&cells, full, "cells"},
                                       {&tanh_cells, full, "tanh_cells"}, {&d_out, full, "d_out"},
                                       {&dc_all, full, "dc_all"}, {&d_gates, gemm, "d_gates"},
                                       {&dh0, full, "dh0"}}) {
    check_cpu(*t, dtype, name);
  }
  TORCH_CHECK(d_bias_cell.has_value() == d_bias_hidden.has_value(), "d_bias_cell and d_bias_hidden: both or neither");
  TORCH_CHECK(w_hr_t.has_value() == d_projected.has_value(), "w_hr_t and d_projected: both or neither");
  const int64_t total = check_batch_sizes(batch_sizes), batch = batch_sizes[0];
  const int64_t width = dc_all.size(1), out_width = d_out.size(1), hidden = w_hr_t ? w_hr_t->size(0) : out_width;
  TORCH_CHECK(hidden > 0 && width % hidden == 0, "the cell width ", width, " is not a multiple of hidden ", hidden);
  check_shape(gates, total, 4 * width, "gates");
  check_shape(d_gates, total, 4 * width, "d_gates");
  check_shape(cells, batch + total, width, "cells");
  check_shape(tanh_cells, total, width, "tanh_cells");
  check_shape(d_out, total, out_width, "d_out");
  check_shape(dc_all, batch, width, "dc_all");
  check_shape(dh0, batch, out_width, "dh0");
  check_shape(w_hh_t, out_width, 4 * width, "w_hh_t");
  TORCH_CHECK(!w_hr_t || (w_hr_t->size(1) == out_width && d_projected->sizes() == d_out.sizes()),
              "w_hr_t: shape (", hidden, ", ", out_width, ") and d_projected the shape of d_out expected");
  check_vector(d_bias, full, 4 * width, "d_bias");
  check_vector(d_bias_cell, full, width, "d_bias_cell");
  check_vector(d_bias_hidden, full, hidden, "d_bias_hidden");
  dispatch(full, gemm, [&](auto t, auto g) {
    using T = decltype(t);
    using G = decltype(g);
    auto run = [&](auto bias, auto post) {
      backward_loop<T, G, decltype(bias)::value, decltype(post)::value>(
          gates, cells, tanh_cells, d_out, dc_all, w_hh_t, w_hr_t, d_gates, dh0, d_bias, d_bias_cell, d_bias_hidden,
          d_projected, batch_sizes);
    };
    if (d_bias && d_bias_cell) run(std::true_type{}, std::true_type{});
    else if (d_bias) run(std::true_type{}, std::false_type{});
    else if (d_bias_cell) run(std::false_type{}, std::true_type{});
    else run(std::false_type{}, std::false_type{});
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cerebral, m) {
  m.def("layer_forward(Tensor xz, Tensor xz_bias, Tensor w_hh, Tensor? w_hr, Tensor(a!) h_all, Tensor(b!) cells, "
        "Tensor(c!) gates, Tensor(d!) tanh_cells, Tensor(e!) summed, Tensor(f!)? out, Tensor(g!)? summed_gemm, "
        "Tensor? bias_cell, Tensor? bias_hidden, int[] batch_sizes) -> ()");
  m.def("layer_backward(Tensor gates, Tensor cells, Tensor tanh_cells, Tensor d_out, Tensor(a!) dc_all, "
        "Tensor w_hh_t, Tensor? w_hr_t, Tensor(b!) d_gates, Tensor(c!) dh0, Tensor(d!)? d_bias, "
        "Tensor(e!)? d_bias_cell, Tensor(f!)? d_bias_hidden, Tensor(g!)? d_projected, int[] batch_sizes) -> ()");
}

TORCH_LIBRARY_IMPL(cerebral, CPU, m) {
  m.impl("layer_forward", layer_forward);
  m.impl("layer_backward", layer_backward);
}

// A recurrent weight in oneDNN's packed layout makes the call dispatch here.
TORCH_LIBRARY_IMPL(cerebral, MkldnnCPU, m) {
  m.impl("layer_forward", layer_forward);
  m.impl("layer_backward", layer_backward);
}
