// The argument checks both kernels (gates.cpp, sequence.cpp) make before they read raw pointers:
// a tensor of the wrong device, dtype, layout or shape is one clear error, never a read past a buffer.

#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>

namespace cerebral {

inline void check_cpu(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && t.is_contiguous(), name,
              ": a contiguous CPU tensor of ", dtype, " expected, got ", t.is_contiguous() ? "" : "a non-contiguous ",
              t.scalar_type(), " on ", t.device());
}

inline void check_shape(const at::Tensor& t, int64_t rows, int64_t cols, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols, name, ": shape (", rows, ", ", cols,
              ") expected, got ", t.sizes());
}

inline void check_matrix(const at::Tensor& t, at::ScalarType dtype, int64_t rows, int64_t cols, const char* name) {
  check_cpu(t, dtype, name);
  check_shape(t, rows, cols, name);
}

// An optional vector (a bias or its gradient): absent, or `size` contiguous CPU values of `dtype`.
inline void check_vector(const std::optional<at::Tensor>& t, at::ScalarType dtype, int64_t size, const char* name) {
  if (!t) return;
  check_cpu(*t, dtype, name);
  TORCH_CHECK(t->dim() == 1 && t->size(0) == size, name, ": a vector of ", size, " expected, got ", t->sizes());
}

}  // namespace cerebral
