// The activations both kernels (gates.cpp, sequence.cpp) compute: float on a vectorisable exp of
// its own, double on std::exp and std::tanh (for the float64 gradcheck of the tests).

#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace cerebral {

// x = n ln2 + r with |r| <= ln2 / 2, and 2^n. x is clamped to [-87, 88], where 2^n is a normal float.
inline void reduce(float x, float& r, float& scale) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float n = (x * 1.44269504088896341f + shifter) - shifter;
  r = x - n * 0.693145751953125f;  // ln2 in two parts (Cody and Waite), the first exact in n * it
  r = r - n * 1.42860682030941723212e-6f;
  scale = std::bit_cast<float>(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
}

// exp(r) - 1 for |r| <= ln2 / 2: Taylor to degree 7, below 0.3 ulp of truncation there.
inline float expm1_reduced(float r) {
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  return p * r;
}

inline float sigmoid(float x) {  // 1 / (1 + exp(-x))
  float r, scale;
  reduce(-x, r, scale);
  return 1.0f / (1.0f + scale * (1.0f + expm1_reduced(r)));
}

inline float tanh(float x) {  // sign(x) * -t / (2 + t), t = expm1(-2|x|): no cancellation near 0
  float r, scale;
  reduce(-2.0f * std::fabs(x), r, scale);
  float t = scale * expm1_reduced(r) + (scale - 1.0f);
  return std::copysign(-t / (2.0f + t), x);
}

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double tanh(double x) { return std::tanh(x); }

}  // namespace cerebral
