// The polynomial math shared by every C++/CUDA kernel, written once. Torch-free so nvcc can compile it
// without torch headers. p(x) = c_0 + c_1 x + ... + c_D x^D, always by Horner (no power matrix).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__FMA__) && !defined(__CUDACC__)
#include <immintrin.h>
#endif

#include "host_device.h"

namespace pykernels {

// One rounding semantics on every backend (the reference, torch, numba, C++, CUDA): every product is rounded on its
// own, as torch's eager ops round it, never fused with the add it feeds into one FMA. A fused Horner step keeps
// finite what overflows when rounded (x = 2, coeffs (-1.7e308, 1.7e308): p(x) = 2 * 1.7e308 - 1.7e308 = inf, while
// fma gives 1.7e308), so backends would disagree at the limits. The C++ kernels are compiled with
// -ffp-contract=off (pykernels/_build.py; gram_cpu.cpp opts back in, rounding on its own where it must), the CUDA
// ones round by __dmul_rn/__fmul_rn here. The one exception, kMayFuse: float32 data computed in float64, where
// every value entering a product is far below float64's range, so fusing cannot change an overflow (only the last
// bits, before the float32 rounding of the result); there the FMA is explicit.
template <typename Math, typename Data>
constexpr bool kMayFuse = sizeof(Data) < sizeof(double) && !std::is_same_v<Math, Data>;

// a * b, rounded on its own (see above).
template <typename T>
PK_INLINE T multiply(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, double>) {
    return __dmul_rn(a, b);
  } else {
    return __fmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

// a * b + c with one rounding (the error-free product below, kMayFuse's Horner steps); also for SIMD vectors.
template <typename T>
PK_INLINE T fused_multiply_add(T a, T b, T c) {
  if constexpr (std::is_arithmetic_v<T>) {
#if defined(__CUDA_ARCH__)
    return fma(a, b, c);
#else
    return std::fma(a, b, c);
#endif
  } else {
#if defined(__FMA__) && !defined(__CUDACC__)
    // float64 vectors by the FMA instructions themselves: a lane-by-lane __builtin_fma is not reliably vectorized
    // (GCC 12 scalarizes it inside the kernels)
    if constexpr (sizeof(a[0]) == sizeof(double) && sizeof(T) == 64) {
#if defined(__AVX512F__)
      return (T)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#else
      const __m256d low = _mm256_fmadd_pd(__builtin_shufflevector(a, a, 0, 1, 2, 3),
                                          __builtin_shufflevector(b, b, 0, 1, 2, 3),
                                          __builtin_shufflevector(c, c, 0, 1, 2, 3));
      const __m256d high = _mm256_fmadd_pd(__builtin_shufflevector(a, a, 4, 5, 6, 7),
                                           __builtin_shufflevector(b, b, 4, 5, 6, 7),
                                           __builtin_shufflevector(c, c, 4, 5, 6, 7));
      return __builtin_shufflevector(low, high, 0, 1, 2, 3, 4, 5, 6, 7);
#endif
    } else if constexpr (sizeof(a[0]) == sizeof(double) && sizeof(T) == 32) {
      return (T)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
    }
#endif
    T result;
    for (int lane = 0; lane < static_cast<int>(sizeof(T) / sizeof(a[0])); ++lane) {
      result[lane] = __builtin_fma(a[lane], b[lane], c[lane]);
    }
    return result;
  }
}

// a * b + c: one FMA where kFuse (see kMayFuse), else the product rounded on its own.
template <bool kFuse, typename T>
PK_INLINE T multiply_add(T a, T b, T c) {
  if constexpr (kFuse) {
    return fused_multiply_add(a, b, c);
  } else {
    return multiply(a, b) + c;
  }
}

// A coefficient as a value of the math type T. T may also be a SIMD vector type (the CPU kernels' lanes), which
// overloads this to broadcast.
template <typename T, typename C>
PK_INLINE T splat(C c) {
  return static_cast<T>(c);
}

// p(x) = (...((c_D x + c_{D-1}) x + c_{D-2}) ...) x + c_0, in the math type T, each product rounded unless kFuse.
template <bool kFuse = false, typename T, typename C>
PK_INLINE T horner(const C* coeffs, int64_t degree, T x) {
  T value = splat<T>(coeffs[degree]);
  for (int64_t k = degree - 1; k >= 0; --k) {
    value = multiply_add<kFuse>(value, x, splat<T>(coeffs[k]));
  }
  return value;
}

// p'(x) by Horner on the coefficients of p', (1 c_1, 2 c_2, ..., D c_D) in `derivative_coeffs` (D of them; see
// derivative_coeffs_of): the same operations as the reference, so inf and NaN come out the same; 0 for D = 0.
template <bool kFuse = false, typename T, typename C>
PK_INLINE T horner_derivative(const C* derivative_coeffs, int64_t degree, T x) {
  return degree == 0 ? splat<T>(0.0) : horner<kFuse, T>(derivative_coeffs, degree - 1, x);
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
    term = multiply(term, x);
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

// Error-free transformations (Ogita, Rump and Oishi, "Accurate sum and dot product", 2005): for finite a and b,
// a + b = value + error and a * b = value + error exactly (the product's error barring underflow). Generic over
// scalars and SIMD vectors. Must not be compiled with reassociating fast-math, which deletes the errors.
template <typename T>
struct Exact {
  T value;
  T error;
};

template <typename T>
PK_INLINE Exact<T> two_sum(T a, T b) {
  const T value = a + b;
  const T b_part = value - a;
  return {value, (a - (value - b_part)) + (b - b_part)};
}

template <typename T>
PK_INLINE Exact<T> two_product(T a, T b) {
  const T value = multiply(a, b);
  return {value, fused_multiply_add(a, b, -value)};
}

// Sum2 / Dot2: a sum carried in twice the working precision, value + the sum of every rounding error. Adding n
// terms this way is as accurate as summing in twice the precision and rounding once: the error is at most
// u |sum| + n^2 u^2 sum|terms| (u = 2^-53 in float64). A non-finite value makes its error NaN, so readers use the
// error only where the value is finite.
template <typename T>
struct AccurateSum {
  T value{};
  T error{};

  PK_INLINE void add(T term) {
    const Exact<T> sum = two_sum(value, term);
    value = sum.value;
    error += sum.error;
  }

  // += hi + lo, where lo is far below hi (a term known to twice the working precision).
  PK_INLINE void add(T hi, T lo) {
    add(hi);
    error += lo;
  }

  PK_INLINE void add_product(T a, T b) {
    const Exact<T> product = two_product(a, b);
    add(product.value, product.error);
  }
};

// p(x) to about twice the working precision (compensated Horner: Graillat, Langlois and Louvet, 2005): value +
// error, where error carries every Horner step's rounding errors through the remaining steps.
template <typename T, typename C>
PK_INLINE Exact<T> compensated_horner(const C* coeffs, int64_t degree, T x) {
  T value = splat<T>(coeffs[degree]);
  T error = splat<T>(0.0);
  for (int64_t k = degree - 1; k >= 0; --k) {
    const Exact<T> product = two_product(value, x);
    const Exact<T> sum = two_sum(product.value, splat<T>(coeffs[k]));
    value = sum.value;
    error = multiply(error, x) + (product.error + sum.error);
  }
  return {value, error};
}

}  // namespace pykernels
