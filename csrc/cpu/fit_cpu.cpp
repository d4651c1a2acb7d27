// Fused gradient-descent fits: the whole loop of `steps` poly_mse steps in one call (fit_poly).
//
// Per step: r = p(x) - y, loss = mean(r^2), grad_k = 2/N sum r x^k, coeffs -= lr * grad. The math is done in the
// data's dtype (float32 data: float32 math, 16 SIMD lanes) and every sum is accumulated in blocks of at most
// kBlockElements per lane, each block's sum widened to float64 before it is added to the total.
//
// Single fit: SIMD across data points. Batched fits ((B, N) data): SIMD across series, kLanes series per
// vector, so no horizontal sum is needed at all; tiles of series run in parallel (at::parallel_for).
//
// The SIMD loops are written for speed: FMA contraction (this file keeps it, unlike the rest of csrc), Horner's last
// step reordered, padding masked by multiplication. Where an intermediate could overflow or a value is not finite,
// that could change inf/NaN (a fused product can stay finite where the reference's rounded one overflows), so each
// segment of steps is certified afterwards: every coefficient it produced, with the data's bounds, keeps every
// intermediate far below the dtype's largest value (fit_cannot_overflow), or the segment is run again by
// fit_single_exact (fit_exact_cpu.cpp: the reference's order, every product rounded) from its start.
#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "../checks.h"
#include "fit_exact_cpu.h"
#include "reduce_cpu.h"

namespace pykernels {
namespace {

template <typename scalar_t>
struct Simd;

template <>
struct Simd<float> {
  typedef float type __attribute__((vector_size(64)));
  typedef double wide __attribute__((vector_size(128)));
  using integer = int32_t;  // bits: the lanes' bit patterns
  typedef integer bits __attribute__((vector_size(64)));
  static constexpr int kLanes = 16;
};

template <>
struct Simd<double> {
  using type = LaneVector;
  using wide = LaneVector;
  using integer = int64_t;
  typedef integer bits __attribute__((vector_size(64)));
  static constexpr int kLanes = 8;
};

constexpr int64_t kBlockElements = 256;  // per lane: a float32 block sum loses < 256 ulp in the worst case

// Pairwise horizontal sums: halve the vector kLanes -> 1, one shuffle and one add per level, widened at the end.
inline double horizontal_sum(Simd<float>::type v) {
  typedef float V8 __attribute__((vector_size(32)));
  typedef float V4 __attribute__((vector_size(16)));
  const V8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const V4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return static_cast<double>((b[0] + b[2]) + (b[1] + b[3]));
}

inline double horizontal_sum(Simd<double>::type v) {
  typedef double V4 __attribute__((vector_size(32)));
  const V4 a = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  return (a[0] + a[2]) + (a[1] + a[3]);
}

// The same pairwise sum, left in every lane (butterfly): a fit whose sums fit one block updates its coefficient
// vectors without leaving the vector registers.
inline Simd<float>::type broadcast_sum(Simd<float>::type v) {
  v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  return v;
}

inline Simd<double>::type broadcast_sum(Simd<double>::type v) {
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  return v;
}

// Many sums folded at once (a transposed butterfly): each level adds the same lanes as broadcast_sum's (lane i and
// i + d, for d = L/2, L/4, ..., 1), so every total is broadcast_sum's bit for bit, but each level packs two vectors'
// partial sums into one, so the vectors halve level by level: m sums take ~2m shuffles and ~m adds, where m
// broadcast_sums take 4m of each (16 lanes). A level takes a and b, adds lanes d apart within each of their segments
// of 2d lanes, and packs the halved segments, a's first. fold_halves (d = L/2) and fold_quarters (d = L/4) pair
// sums across 128-bit chunks (fold_quad: four sums, one per chunk); fold_by_2 and fold_by_1 work inside the chunks.
inline Simd<float>::type fold_halves(Simd<float>::type a, Simd<float>::type b) {
  return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
         __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
}
inline Simd<float>::type fold_quarters(Simd<float>::type a, Simd<float>::type b) {
  return __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
         __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
}
inline Simd<float>::type fold_by_2(Simd<float>::type a, Simd<float>::type b) {  // within each chunk
  return __builtin_shufflevector(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
         __builtin_shufflevector(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
}
inline Simd<float>::type fold_by_1(Simd<float>::type a, Simd<float>::type b) {  // within each chunk
  return __builtin_shufflevector(a, b, 0, 2, 16, 18, 4, 6, 20, 22, 8, 10, 24, 26, 12, 14, 28, 30) +
         __builtin_shufflevector(a, b, 1, 3, 17, 19, 5, 7, 21, 23, 9, 11, 25, 27, 13, 15, 29, 31);
}
inline Simd<double>::type fold_halves(Simd<double>::type a, Simd<double>::type b) {
  return __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15);
}
inline Simd<double>::type fold_quarters(Simd<double>::type a, Simd<double>::type b) {
  return __builtin_shufflevector(a, b, 0, 1, 4, 5, 8, 9, 12, 13) +
         __builtin_shufflevector(a, b, 2, 3, 6, 7, 10, 11, 14, 15);
}
inline Simd<double>::type fold_by_1(Simd<double>::type a, Simd<double>::type b) {  // within each chunk
  return __builtin_shufflevector(a, b, 0, 8, 2, 10, 4, 12, 6, 14) +
         __builtin_shufflevector(a, b, 1, 9, 3, 11, 5, 13, 7, 15);
}

// Sums 4q .. 4q + 3 of kSums (zero past the last), one per 128-bit chunk: chunk j holds sum 4q + j's partials.
template <int kSums, typename V>
[[gnu::always_inline]] inline V fold_quad(const V* sums, int q) {
  const auto sum = [&](int s) { return s < kSums ? sums[s] : V{}; };
  return fold_quarters(fold_halves(sum(4 * q), sum(4 * q + 1)), fold_halves(sum(4 * q + 2), sum(4 * q + 3)));
}

// (always_inline: a call would spill the sums to memory, on each step's chain)
template <int kSums, typename V>
[[gnu::always_inline]] inline void fold_sums(const V* sums, V* totals) {
  constexpr int kChunkLanes = 16 / sizeof(V{}[0]);  // one quad per lane of a 128-bit chunk: 4 (float), 2 (double)
  constexpr int kQuads = (kSums + 3) / 4;
  for (int o = 0; kChunkLanes * o < kQuads; ++o) {
    const auto quad = [&](int q) {
      const int index = kChunkLanes * o + q;
      return index < kQuads ? fold_quad<kSums>(sums, index) : V{};
    };
    if constexpr (kChunkLanes == 4) {
      totals[o] = fold_by_1(fold_by_2(quad(0), quad(1)), fold_by_2(quad(2), quad(3)));
    } else {
      totals[o] = fold_by_1(quad(0), quad(1));
    }
  }
}

// Where fold_sums leaves sum s's total: in totals[s / kLanes], this lane (quad q's chunk j holds sum 4q + j).
template <typename scalar_t>
constexpr int folded_lane(int s) {
  constexpr int kChunkLanes = 16 / static_cast<int>(sizeof(scalar_t));
  const int lane = s % Simd<scalar_t>::kLanes;
  return kChunkLanes * (lane % 4) + lane / 4;
}

template <int kLane, typename V, size_t... I>
inline V broadcast_lane(V v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, ((void)I, kLane)...);
}

// The coefficients kept where fold_sums leaves their gradient sums (c_k at sum k + 1's lane), each broadcast to a
// whole vector for Horner's rule.
template <typename scalar_t, typename V, size_t... K>
inline void unpack_coefficients(const V* packed, V* c, std::index_sequence<K...>) {
  constexpr int L = Simd<scalar_t>::kLanes;
  ((c[K] = broadcast_lane<folded_lane<scalar_t>(K + 1)>(packed[(K + 1) / L], std::make_index_sequence<L>{})), ...);
}

// Fixed-size storage when the degree is known at compile time (registers), a vector otherwise.
template <typename T, int kDegree>
struct SumsStorage {
  explicit SumsStorage(int64_t) {}
  T* data() { return values; }
  T values[kDegree + 2];
};

template <typename T>
struct SumsStorage<T, kDynamicDegree> {
  explicit SumsStorage(int64_t degree) : values(degree + 2) {}
  T* data() { return values.data(); }
  std::vector<T> values;
};

}  // namespace

template <>
inline Simd<float>::type splat<Simd<float>::type, float>(float c) {
  return Simd<float>::type{} + c;
}

namespace {

// acc = max(acc, |v|) lane by lane; NaN in v makes acc NaN (fit_cannot_overflow then refuses it).
template <typename V>
inline void track_largest(V& acc, V v) {
  const V magnitude = v < 0 ? -v : v;
  acc = (magnitude > acc) | (magnitude != magnitude) ? magnitude : acc;
}

// Whether no intermediate of a step can come near overflow, for data with |x| <= x_max, |y| <= y_max and
// coefficients |c_k| <= c_max throughout: with X = max(1, x_max), |p(x)| <= P = c_max (D+1) X^D and |r| <= R = P +
// y_max, and every product and sum of a step (Horner's, r^2, r x^k, their sums over n points, the update
// lr 2/n sum r x^k) is at most max(P X, n R^2, n R X^D, 2 |lr| R X^D). Below 1/16 of the dtype's largest value,
// neither the SIMD loops nor the reference's order overflow anywhere: they agree but for rounding.
template <typename scalar_t>
bool fit_cannot_overflow(double x_max, double y_max, double c_max, int64_t n, int64_t degree, double lr) {
  if (!std::isfinite(x_max) || !std::isfinite(y_max) || !std::isfinite(c_max)) return false;
  const double big_x = std::max(1.0, x_max);
  const double power = std::pow(big_x, static_cast<double>(degree));
  const double p = c_max * static_cast<double>(degree + 1) * power;
  const double r = p + y_max;
  const double n_d = static_cast<double>(n);
  const double largest = std::max({p * big_x, n_d * r * r, n_d * r * power, 2.0 * std::abs(lr) * r * power});
  return largest <= static_cast<double>(std::numeric_limits<scalar_t>::max()) / 16.0;  // false for inf and NaN
}

template <typename scalar_t>
double largest_magnitude(const scalar_t* values, int64_t count) {
  double largest = 0.0;
  for (int64_t i = 0; i < count; ++i) track_largest(largest, static_cast<double>(values[i]));
  return largest;
}

// Points [g L, g L + L) of a single fit as vectors: x, y (0 past n) and the masked powers x^0..x^degree (the
// mask is 0 past n, so padding adds nothing to any sum).
template <typename scalar_t, typename V = typename Simd<scalar_t>::type>
void pack_group(const scalar_t* x, const scalar_t* y, int64_t n, int64_t g, int64_t degree, V& xg, V& yg,
                V* powers) {
  constexpr int L = Simd<scalar_t>::kLanes;
  V mask{};
  for (int lane = 0; lane < L; ++lane) {
    const int64_t i = g * L + lane;
    xg[lane] = i < n ? x[i] : scalar_t(0);
    yg[lane] = i < n ? y[i] : scalar_t(0);
    mask[lane] = i < n ? scalar_t(1) : scalar_t(0);
  }
  V power = mask;
  for (int64_t k = 0; k <= degree; ++k, power *= xg) powers[k] = power;
}

// One fit of a runtime degree (above kMaxUnrolledDegree), SIMD across points. Each step is a chain (the next step
// needs this step's reduced gradient), so the kernel is built for latency: even and odd groups accumulate
// separately (half the add chain), sums are reduced by a butterfly that leaves them in every lane, and the
// coefficients stay broadcast in vectors, updated there. Degrees known at compile time run fit_single_unrolled,
// which keeps them in registers. A fit of at most kLanes * kBlockElements points sums in its own precision; longer
// fits widen each block's sums to float64 (fit_single_blocked). The padding's residual is zeroed by a mask: its y
// cannot be p(0), since the coefficients change every step.
template <int kDegree, typename scalar_t>
void fit_single(const scalar_t* x, const scalar_t* y, int64_t n, int64_t degree, scalar_t lr, int64_t steps,
                int64_t record_every, int64_t& until_record, scalar_t* coeffs, scalar_t*& trace,
                scalar_t& coeff_bound) {
  using V = typename Simd<scalar_t>::type;
  constexpr int L = Simd<scalar_t>::kLanes;
  const int64_t deg = effective_degree<kDegree>(degree);
  const int64_t groups = (n + L - 1) / L;
  std::vector<V> xs(groups), ys(groups), powers(groups * (deg + 1));
  for (int64_t g = 0; g < groups; ++g) pack_group(x, y, n, g, deg, xs[g], ys[g], powers.data() + g * (deg + 1));
  SumsStorage<V, kDegree> coeff_storage(deg), even_storage(deg), odd_storage(deg);
  V* c = coeff_storage.data();
  V* even = even_storage.data();
  V* odd = odd_storage.data();
  for (int64_t k = 0; k <= deg; ++k) c[k] = splat<V>(coeffs[k]);
  const V step_scale = splat<V>(static_cast<scalar_t>(lr * 2.0 / static_cast<double>(n)));
  const scalar_t inv_n = static_cast<scalar_t>(1.0 / static_cast<double>(n));
  auto add_group = [&](V* sums, int64_t g) {
    const V* pw = powers.data() + g * (deg + 1);
    // Horner's last step adds (c_0 - y) instead of c_0, then subtracts y: one add less on the chain
    V value = c[deg];
    for (int64_t k = deg - 1; k >= 1; --k) value = value * xs[g] + c[k];
    const V r = deg == 0 ? c[0] - ys[g] : value * xs[g] + (c[0] - ys[g]);
    sums[0] += (r * pw[0]) * r;  // pw[0] is the mask, and every pw[k] is masked: no multiply on the chain
    for (int64_t k = 0; k <= deg; ++k) sums[k + 1] += r * pw[k];  // independent of each other: no chain
  };
  V largest{};  // of every coefficient, every step: for fit_cannot_overflow
  for (int64_t step = 0; step < steps; ++step) {
    for (int64_t s = 0; s < deg + 2; ++s) even[s] = odd[s] = V{};
    int64_t g = 0;
    for (; g + 1 < groups; g += 2) {
      add_group(even, g);
      add_group(odd, g + 1);
    }
    if (g < groups) add_group(even, g);
    for (int64_t k = 0; k <= deg; ++k) c[k] -= step_scale * broadcast_sum(even[k + 1] + odd[k + 1]);
    for (int64_t k = 0; k <= deg; ++k) track_largest(largest, c[k]);  // off the step's chain
    if (--until_record == 0) {
      *trace++ = broadcast_sum(even[0] + odd[0])[0] * inv_n;
      until_record = record_every;
    }
  }
  for (int64_t k = 0; k <= deg; ++k) coeffs[k] = c[k][0];
  coeff_bound = largest[0];
}

// A single fit with its degree known at compile time: fit_single's step with the groups in tiles of kGroups, each
// tile's loop unrolled, so the coefficients and sums stay in registers. (With fit_single's runtime group loop GCC
// keeps them on the stack, and each step's chain then waits on store-to-load round trips.) kStoredPowers: the masked
// powers x^k are precomputed (while they fit in L1); otherwise each step multiplies them out from the masked
// residual, reading only x, y and the mask. kOneTile: a fit of at most kGroups groups, with no tile loop at all (the
// seed fit's case; the loop costs it ~1 ns per step), and no work on the groups past n.
//
// The step is a chain (residuals, their sums, the folds across lanes, the update), and the core runs it as fast as
// it can schedule it: each step's ~150 vector instructions wait on the last one's update, more than the core's
// scheduler holds. So the step issues few of them, critical ones first: every group's residual before any sum;
// the sums' lanes folded together (fold_sums: the same additions as broadcast_sum's, so the same iterates, with
// about half its shuffles); the coefficients kept packed in the folded layout, so one FMA updates them all.
template <int kDegree, int kGroups, bool kStoredPowers, bool kOneTile, typename scalar_t>
void fit_single_unrolled(const scalar_t* x, const scalar_t* y, int64_t n, int64_t /*degree*/, scalar_t lr,
                         int64_t steps, int64_t record_every, int64_t& until_record, scalar_t* coeffs,
                         scalar_t*& trace, scalar_t& coeff_bound) {
  using V = typename Simd<scalar_t>::type;
  using Bits = typename Simd<scalar_t>::bits;
  constexpr int L = Simd<scalar_t>::kLanes;
  constexpr int D = kDegree;
  constexpr int kSums = D + 2;  // sum 0: the loss's, sum k + 1: the gradient's k-th
  constexpr int kFolded = (kSums + L - 1) / L;
  constexpr int kStride = kStoredPowers ? D + 1 : 1;  // powers per group: x^0..x^D, or the mask (x^0) alone
  const int64_t groups = (n + L - 1) / L;
  const int64_t tiles = kOneTile ? 1 : (n + kGroups * L - 1) / (kGroups * L);
  std::vector<V> xs(tiles * kGroups), ys(tiles * kGroups), powers(tiles * kGroups * kStride);
  for (int64_t g = 0; g < tiles * kGroups; ++g) {
    pack_group(x, y, n, g, kStride - 1, xs[g], ys[g], &powers[g * kStride]);
  }
  // c_k, the step's scale and the mask of |.| (every bit but the sign) in sum k + 1's folded lane; zeros elsewhere,
  // so the other lanes (the loss's, padding) stay 0 and are never tracked.
  V packed[kFolded] = {}, step_scale[kFolded] = {};
  Bits magnitude_mask[kFolded] = {};
  for (int k = 0; k <= D; ++k) {
    const int o = (k + 1) / L, lane = folded_lane<scalar_t>(k + 1);
    packed[o][lane] = coeffs[k];
    step_scale[o][lane] = static_cast<scalar_t>(lr * 2.0 / static_cast<double>(n));
    magnitude_mask[o][lane] = std::numeric_limits<typename Simd<scalar_t>::integer>::max();
  }
  const scalar_t inv_n = static_cast<scalar_t>(1.0 / static_cast<double>(n));
  int64_t countdown = until_record;  // locals, not the references: no memory round trip per step
  scalar_t* next_loss = trace;
  V largest{};  // of every coefficient, every step: for fit_cannot_overflow
  for (int64_t step = 0; step < steps; ++step) {
    V c[D + 1];
    unpack_coefficients<scalar_t>(packed, c, std::make_index_sequence<D + 1>{});
    V sums[2][kSums];  // even and odd groups: half the add chain
#pragma GCC unroll 16
    for (int s = 0; s < kSums; ++s) sums[0][s] = sums[1][s] = V{};
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const V* xt = xs.data() + tile * kGroups;
      const V* yt = ys.data() + tile * kGroups;
      const V* pt = powers.data() + tile * kGroups * kStride;
      V residuals[kGroups] = {};  // (zeros: GCC cannot tell the two loops stop at the same group)
#pragma GCC unroll 16
      for (int g = 0; g < kGroups; ++g) {
        if (kOneTile && g >= groups) break;
        // Horner's last step adds (c_0 - y) instead of c_0, then subtracts y: one add less on the chain
        V value = c[D];
#pragma GCC unroll 16
        for (int k = D - 1; k >= 1; --k) value = value * xt[g] + c[k];
        residuals[g] = D == 0 ? c[0] - yt[g] : value * xt[g] + (c[0] - yt[g]);
      }
#pragma GCC unroll 16
      for (int g = 0; g < kGroups; ++g) {
        if (kOneTile && g >= groups) break;
        const V r = residuals[g];
        V* acc = sums[g & 1];
        const V* pw = pt + g * kStride;
        if constexpr (kStoredPowers) {
          acc[0] += (r * pw[0]) * r;  // pw[0] is the mask, and every pw[k] is masked: no multiply on the chain
#pragma GCC unroll 16
          for (int k = 0; k <= D; ++k) acc[k + 1] += r * pw[k];
        } else {
          V term = r * pw[0];  // the masked residual, then times x per power
          acc[0] += term * r;
#pragma GCC unroll 16
          for (int k = 0; k <= D; ++k, term *= xt[g]) acc[k + 1] += term;
        }
      }
    }
    V totals[kSums], folded[kFolded];
#pragma GCC unroll 16
    for (int s = 0; s < kSums; ++s) totals[s] = sums[0][s] + sums[1][s];
    fold_sums<kSums>(totals, folded);
#pragma GCC unroll 2
    for (int o = 0; o < kFolded; ++o) {
      packed[o] -= step_scale[o] * folded[o];
      // Off the step's chain. A NaN is not kept here: one NaN coefficient makes every residual NaN, so every
      // coefficient stays NaN, and fit_single_checked refuses the segment on its last coefficients.
      const V magnitude = (V)((Bits)packed[o] & magnitude_mask[o]);  // |c| in coefficient lanes, else 0
      largest = magnitude > largest ? magnitude : largest;
    }
    if (--countdown == 0) {
      *next_loss++ = folded[0][folded_lane<scalar_t>(0)] * inv_n;
      countdown = record_every;
    }
  }
  for (int k = 0; k <= D; ++k) coeffs[k] = packed[(k + 1) / L][folded_lane<scalar_t>(k + 1)];
  coeff_bound = 0;
  for (int lane = 0; lane < L; ++lane) coeff_bound = std::max(coeff_bound, largest[lane]);
  until_record = countdown;
  trace = next_loss;
}

// A fit too long for one block: the same step, with each block's sums widened to float64 before they are added.
template <int kDegree, typename scalar_t>
void fit_single_blocked(const scalar_t* x, const scalar_t* y, int64_t n, int64_t degree, scalar_t lr,
                        int64_t steps, int64_t record_every, int64_t& until_record, scalar_t* coeffs,
                        scalar_t*& trace, scalar_t& coeff_bound) {
  using V = typename Simd<scalar_t>::type;
  constexpr int L = Simd<scalar_t>::kLanes;
  const int64_t deg = effective_degree<kDegree>(degree);
  const int64_t groups = (n + L - 1) / L;
  std::vector<V> xs(groups), ys(groups), mask(groups);
  for (int64_t g = 0; g < groups; ++g) {
    for (int lane = 0; lane < L; ++lane) {
      const int64_t i = g * L + lane;
      xs[g][lane] = i < n ? x[i] : scalar_t(0);
      ys[g][lane] = i < n ? y[i] : scalar_t(0);
      mask[g][lane] = i < n ? scalar_t(1) : scalar_t(0);
    }
  }
  const double inv_n = 1.0 / static_cast<double>(n);
  SumsStorage<V, kDegree> coeff_storage(deg), block_storage(deg);
  SumsStorage<double, kDegree> total_storage(deg);
  V* c = coeff_storage.data();
  V* sums = block_storage.data();
  double* totals = total_storage.data();
  coeff_bound = 0;
  for (int64_t step = 0; step < steps; ++step) {
    for (int64_t k = 0; k <= deg; ++k) c[k] = splat<V>(coeffs[k]);
    for (int64_t s = 0; s < deg + 2; ++s) totals[s] = 0.0;
    for (int64_t g0 = 0; g0 < groups; g0 += kBlockElements) {  // each group adds one element per lane
      for (int64_t s = 0; s < deg + 2; ++s) sums[s] = V{};
      for (int64_t g = g0; g < std::min(groups, g0 + kBlockElements); ++g) {
        const V r = (horner(c, deg, xs[g]) - ys[g]) * mask[g];
        sums[0] += r * r;
        accumulate_powers(sums + 1, 1, deg, xs[g], r);
      }
      for (int64_t s = 0; s < deg + 2; ++s) totals[s] += horizontal_sum(sums[s]);
    }
    if (--until_record == 0) {
      *trace++ = static_cast<scalar_t>(totals[0] * inv_n);
      until_record = record_every;
    }
    for (int64_t k = 0; k <= deg; ++k) coeffs[k] -= lr * static_cast<scalar_t>(2.0 * inv_n * totals[k + 1]);
    for (int64_t k = 0; k <= deg; ++k) track_largest(coeff_bound, coeffs[k]);
  }
}

template <typename scalar_t>
bool all_finite(const scalar_t* values, int64_t count) {
  return std::all_of(values, values + count, [](scalar_t v) { return std::isfinite(v); });
}

// A single fit by a SIMD loop `fit` (fit_single, fit_single_unrolled or fit_single_blocked), in segments of
// kCheckedSteps steps, each certified afterwards: its coefficients are finite and fit_cannot_overflow holds for the
// largest of them. A segment that is not is run again from its start by fit_single_exact, which finishes the fit.
// One check per segment: the steps themselves only track the largest coefficient, off their dependent chain.
template <typename scalar_t, typename Fit>
void fit_single_checked(Fit fit, const scalar_t* x, const scalar_t* y, int64_t n, int64_t degree, scalar_t lr,
                        int64_t steps, int64_t record_every, scalar_t* coeffs, scalar_t* trace) {
  constexpr int64_t kCheckedSteps = 1024;
  const double x_max = largest_magnitude(x, n);
  const double y_max = largest_magnitude(y, n);
  std::vector<scalar_t> start(degree + 1);
  int64_t until_record = 1;  // a countdown: an integer division per step would cost more than a small fit's step
  for (int64_t done = 0; done < steps;) {
    const int64_t count = std::min(kCheckedSteps, steps - done);
    std::copy(coeffs, coeffs + degree + 1, start.begin());
    const int64_t until_record_at_start = until_record;
    scalar_t* const trace_at_start = trace;
    scalar_t largest = 0;
    fit(x, y, n, degree, lr, count, record_every, until_record, coeffs, trace, largest);
    const double c_max = std::max(largest_magnitude(start.data(), degree + 1), static_cast<double>(largest));
    if (largest == largest && all_finite(coeffs, degree + 1) &&
        fit_cannot_overflow<scalar_t>(x_max, y_max, c_max, n, degree, lr)) {
      done += count;
      continue;
    }
    std::copy(start.begin(), start.end(), coeffs);
    until_record = until_record_at_start;
    trace = trace_at_start;
    fit_single_exact(x, y, n, degree, lr, steps - done, record_every, until_record, coeffs, trace);
    return;
  }
}

// kLanes fits at once, one per lane, SIMD across series. xt/yt: (n, kLanes) transposed tiles; coefficient k of
// the tile's series is lane-wise in c[k]. trace rows are written per series. largest: per lane, the largest
// coefficient of any step (for the certification, see fit_poly_cpu).
template <int kDegree, typename scalar_t>
void fit_tile(const typename Simd<scalar_t>::type* xt, const typename Simd<scalar_t>::type* yt, int64_t n,
              int64_t degree, scalar_t lr, int64_t steps, int64_t record_every,
              typename Simd<scalar_t>::type* c, scalar_t* trace, int64_t trace_stride, int live_lanes,
              typename Simd<scalar_t>::type& largest) {
  using V = typename Simd<scalar_t>::type;
  using W = typename Simd<scalar_t>::wide;
  const int64_t deg = effective_degree<kDegree>(degree);
  std::vector<V> acc_storage(deg + 2);
  std::vector<W> totals(deg + 2);
  const double inv_n = 1.0 / static_cast<double>(n);
  int64_t until_record = 1;  // step 0 is recorded
  for (int64_t step = 0; step < steps; ++step) {
    for (auto& t : totals) t = W{};
    for (int64_t i0 = 0; i0 < n; i0 += kBlockElements) {
      V acc[kDegree == kDynamicDegree ? 1 : kDegree + 2];
      V* sums = kDegree == kDynamicDegree ? acc_storage.data() : acc;
      for (int64_t s = 0; s < deg + 2; ++s) sums[s] = V{};
      const int64_t i1 = std::min(n, i0 + kBlockElements);
      for (int64_t i = i0; i < i1; ++i) {
        const V r = horner(c, deg, xt[i]) - yt[i];
        sums[0] += r * r;
        accumulate_powers(sums + 1, 1, deg, xt[i], r);
      }
      for (int64_t s = 0; s < deg + 2; ++s) totals[s] += __builtin_convertvector(sums[s], W);
    }
    if (--until_record == 0) {
      const W loss = totals[0] * inv_n;
      for (int lane = 0; lane < live_lanes; ++lane) trace[lane * trace_stride] = static_cast<scalar_t>(loss[lane]);
      ++trace;
      until_record = record_every;
    }
    for (int64_t k = 0; k <= deg; ++k) {
      c[k] -= lr * __builtin_convertvector(totals[k + 1] * (2.0 * inv_n), V);
      track_largest(largest, c[k]);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> fit_poly_cpu(const at::Tensor& x_in, const at::Tensor& y_in,
                                                const at::Tensor& coeffs_in, double lr, int64_t steps,
                                                int64_t record_every) {
  check_fit_inputs(x_in, y_in, coeffs_in, steps, record_every);
  const bool batched = y_in.dim() == 2;
  const int64_t series = batched ? y_in.size(0) : 1;
  const int64_t n = y_in.size(-1);
  const int64_t degree = coeffs_in.size(-1) - 1;
  const int64_t records = fit_records(steps, record_every);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = y_in.contiguous();
  at::Tensor coeffs = (batched ? coeffs_in.expand({series, degree + 1}) : coeffs_in).contiguous().clone();
  at::Tensor trace = at::empty(batched ? at::IntArrayRef{series, records} : at::IntArrayRef{records}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fit_poly_cpu", [&] {
    using V = typename Simd<scalar_t>::type;
    constexpr int L = Simd<scalar_t>::kLanes;
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    const scalar_t* y_data = y.const_data_ptr<scalar_t>();
    scalar_t* coeffs_data = coeffs.mutable_data_ptr<scalar_t>();
    scalar_t* trace_data = trace.mutable_data_ptr<scalar_t>();
    const bool shared_x = x.dim() == 1;
    dispatch_degree(degree, [&](auto kDegree) {
      constexpr int kDeg = decltype(kDegree)::value;
      if (!batched) {
        const auto fit_with = [&](auto fit) {
          fit_single_checked<scalar_t>(fit, x_data, y_data, n, degree, static_cast<scalar_t>(lr), steps,
                                       record_every, coeffs_data, trace_data);
        };
        if (n > L * kBlockElements) {
          fit_with(fit_single_blocked<kDeg, scalar_t>);
        } else if constexpr (kDeg == kDynamicDegree) {
          fit_with(fit_single<kDeg, scalar_t>);
        } else {
          // up to 8 groups: one unrolled tile; beyond, tiles of 4 (less padding), with the powers precomputed while
          // they fit in L1 (32 KiB of them)
          const bool stored = (n + L - 1) / L * (kDeg + 1) * static_cast<int64_t>(sizeof(V)) <= (32 << 10);
          fit_with(n <= 2 * L   ? fit_single_unrolled<kDeg, 2, true, true, scalar_t>
                   : n <= 4 * L ? fit_single_unrolled<kDeg, 4, true, true, scalar_t>
                   : n <= 8 * L ? fit_single_unrolled<kDeg, 8, true, true, scalar_t>
                   : stored     ? fit_single_unrolled<kDeg, 4, true, false, scalar_t>
                                : fit_single_unrolled<kDeg, 4, false, false, scalar_t>);
        }
        return;
      }
      const int64_t tiles = (series + L - 1) / L;
      at::parallel_for(0, tiles, 1, [&](int64_t first, int64_t last) {
        std::vector<V> xt(n), yt(n), c(degree + 1);
        for (int64_t tile = first; tile < last; ++tile) {
          const int64_t s0 = tile * L;
          const int live = static_cast<int>(std::min<int64_t>(L, series - s0));
          for (int64_t i = 0; i < n; ++i) {  // transpose the tile: lane = series; dead lanes fit zeros
            for (int lane = 0; lane < L; ++lane) {
              const bool alive = lane < live;
              xt[i][lane] = !alive ? scalar_t(0) : shared_x ? x_data[i] : x_data[(s0 + lane) * n + i];
              yt[i][lane] = alive ? y_data[(s0 + lane) * n + i] : scalar_t(0);
            }
          }
          for (int64_t k = 0; k <= degree; ++k) {
            for (int lane = 0; lane < L; ++lane) {
              c[k][lane] = lane < live ? coeffs_data[(s0 + lane) * (degree + 1) + k] : scalar_t(0);
            }
          }
          V largest{}, x_max{}, y_max{};
          for (int64_t k = 0; k <= degree; ++k) track_largest(largest, c[k]);
          for (int64_t i = 0; i < n; ++i) {
            track_largest(x_max, xt[i]);
            track_largest(y_max, yt[i]);
          }
          fit_tile<kDeg, scalar_t>(xt.data(), yt.data(), n, degree, static_cast<scalar_t>(lr), steps, record_every,
                                   c.data(), trace_data + s0 * records, records, live, largest);
          for (int lane = 0; lane < live; ++lane) {
            scalar_t* series_coeffs = coeffs_data + (s0 + lane) * (degree + 1);
            bool finite = true;
            for (int64_t k = 0; k <= degree; ++k) finite = finite && std::isfinite(c[k][lane]);
            if (finite && fit_cannot_overflow<scalar_t>(x_max[lane], y_max[lane], largest[lane], n, degree, lr)) {
              for (int64_t k = 0; k <= degree; ++k) series_coeffs[k] = c[k][lane];
              continue;
            }
            // not certified: the series again, from its initial coefficients (still in coeffs_data), exactly
            int64_t until_record = 1;
            scalar_t* series_trace = trace_data + (s0 + lane) * records;
            fit_single_exact(shared_x ? x_data : x_data + (s0 + lane) * n, y_data + (s0 + lane) * n, n, degree,
                             static_cast<scalar_t>(lr), steps, record_every, until_record, series_coeffs,
                             series_trace);
          }
        }
      });
    });
  });
  return {coeffs, trace};
}

}  // namespace

TORCH_LIBRARY_IMPL(pykernels, CPU, m) { m.impl("fit_poly", &fit_poly_cpu); }

}  // namespace pykernels
