// The polynomial math shared by every C++/CUDA kernel, written once. Torch-free so nvcc can compile it
// without torch headers. p(x) = c_0 + c_1 x + ... + c_D x^D, always by Horner (no power matrix).
#pragma once

#include <cstdint>

#include "host_device.h"

namespace pykernels {

// A coefficient as a value of the math type T. T may also be a SIMD vector type (the CPU kernels' lanes), which
// overloads this to broadcast.
template <typename T, typename C>
PK_INLINE T splat(C c) {
  return static_cast<T>(c);
}

// p(x) = (...((c_D x + c_{D-1}) x + c_{D-2}) ...) x + c_0, in the math type T.
template <typename T, typename C>
PK_INLINE T horner(const C* coeffs, int64_t degree, T x) {
  T value = splat<T>(coeffs[degree]);
  for (int64_t k = degree - 1; k >= 0; --k) {
    value = value * x + splat<T>(coeffs[k]);
  }
  return value;
}

// p'(x) by Horner on the coefficients of p', (1 c_1, 2 c_2, ..., D c_D) in `derivative_coeffs` (D of them; see
// derivative_coeffs_of): the same operations as the reference, so inf and NaN come out the same; 0 for D = 0.
template <typename T, typename C>
PK_INLINE T horner_derivative(const C* derivative_coeffs, int64_t degree, T x) {
  return degree == 0 ? splat<T>(0.0) : horner<T>(derivative_coeffs, degree - 1, x);
}

// derivative_coeffs[k - 1] = k coeffs[k], k = 1..degree.
template <typename C>
PK_INLINE void derivative_coeffs_of(const C* coeffs, int64_t degree, C* derivative_coeffs) {
  for (int64_t k = 1; k <= degree; ++k) derivative_coeffs[k - 1] = static_cast<C>(k) * coeffs[k];
}

// sums[k] += weight * x^k for k = 0..degree: one element's share of grad_coeffs[k] = sum_i g_i x_i^k.
// `stride` spaces the sums so that a kernel can keep independent lanes side by side.
template <typename T, typename A>
PK_INLINE void accumulate_powers(A* sums, int64_t stride, int64_t degree, T x, T weight) {
  T term = weight;
  for (int64_t k = 0; k <= degree; ++k) {
    sums[k * stride] += static_cast<A>(term);
    term *= x;
  }
}

// Kahan-Babuska (Neumaier) compensated sum: used where already-accurate partial sums are combined,
// so the combination adds no error of its order. Must not be compiled with reassociating fast-math.
template <typename A>
struct CompensatedSum {
  A sum = A(0);
  A compensation = A(0);

  PK_INLINE void add(A value) {
    const A total = sum + value;
    const bool sum_is_larger = (sum >= A(0) ? sum : -sum) >= (value >= A(0) ? value : -value);
    compensation += sum_is_larger ? (sum - total) + value : (value - total) + sum;
    sum = total;
  }

  // A non-finite sum (inf, NaN) is returned as is: its compensation would turn inf into NaN.
  PK_INLINE A result() const { return (sum - sum) == A(0) ? sum + compensation : sum; }
};

}  // namespace pykernels
