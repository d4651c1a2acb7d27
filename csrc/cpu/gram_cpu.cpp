// Unlike the rest of csrc (compiled with -ffp-contract=off), this file keeps FMA contraction: its jumps' matrix
// products are written for it, and it rounds on its own (rounded(), below) wherever a product must overflow as the
// reference's does.
#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif
// Fits on sufficient statistics: poly_moments (one pass over the data, float64 sums) and fit_poly_moments
// (gradient descent on the quadratic form, (D+1)^2 work per step whatever N is).
//
// With A[j][k] = power_sums[j + k] / N, b = cross_sums / N, s = square_sum / N, a step of gradient descent on the
// mean squared error is u = A c; loss = c.u - 2 c.b + s; c -= 2 lr (u - b), i.e. c' = M c + d with M = I - 2 lr A,
// d = 2 lr b: the data pass's iterates in exact arithmetic, all in float64 here.
//
// A single fit is one dependent chain of (D+1)x(D+1) matrix-vector products, so its speed is the chain's latency.
// fit_single_jumps shortens the chain 16-fold: c_{t+16} = M^16 c_t + q_16 is one matrix-vector product, and the
// losses of the steps between, quadratic forms in c_t (JumpMaps, TargetTables), are computed off the chain, one
// step per SIMD lane. Batched fits are independent chains, SIMD across series: those that share x take the same
// jumps (fit_lanes_jumps: about half the arithmetic of a step per loss, and whole vectors of losses per row),
// the others step (fit_lanes), several vectors in flight.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../checks.h"
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include "reduce_cpu.h"

namespace pykernels {
namespace {

// --- poly_moments -------------------------------------------------------------------------------------------------

// The sums of one row over [begin, end), in one pass (x and y widened to float64, kLanes at a time): with
// kPowers, out[p] = sum x^p (p = 0..2D) first; then out[k] = sum y x^k (k = 0..D) and sum y^2. Running products
// from 1 and from y, as the reference forms them, so inf and NaN come out as there.
template <int kDegree, bool kPowers, typename scalar_t>
void moment_sums(const scalar_t* x, const scalar_t* y, int64_t degree, int64_t begin, int64_t end, double* out) {
  const int64_t deg = effective_degree<kDegree>(degree);
  const int64_t powers = kPowers ? 2 * deg + 1 : 0;
  LaneSums<kDegree == kDynamicDegree ? kDynamicDegree : (kPowers ? 2 * kDegree + 1 : 0) + kDegree + 2> sums(
      powers + deg + 2);
  LaneVector* power_acc = sums.data();
  LaneVector* cross_acc = power_acc + powers;
  for (int64_t i = begin; i < end; i += kLanes) {
    const int64_t count = std::min<int64_t>(kLanes, end - i);
    const LaneVector xs = load_group(x, i, end, 0.0);
    const LaneVector ys = load_group(y, i, end, 0.0);  // padding 0: adds 0 to the cross and square sums
    LaneVector cross = ys;
    for (int64_t k = 0; k <= deg; ++k, cross *= xs) cross_acc[k] += zero_padding(cross, count);
    cross_acc[deg + 1] += ys * ys;
    if constexpr (kPowers) {
      LaneVector term = zero_padding(splat<LaneVector>(1.0), count);  // the padding's 0^0 = 1 must not count
      for (int64_t p = 0; p < powers; ++p, term *= xs) power_acc[p] += term;
    }
  }
  fold_lanes(power_acc, powers + deg + 2, out);
}

// One row's sums over all its points, in fixed chunks (in parallel when the caller is not already).
template <bool kPowers, typename scalar_t>
void row_moments(const scalar_t* x, const scalar_t* y, int64_t n, int64_t degree, double* out) {
  const int64_t num_sums = (kPowers ? 2 * degree + 1 : 0) + degree + 2;
  dispatch_degree(degree, [&](auto kDegree) {
    reduce_in_chunks(n, num_sums, out, [&](int64_t begin, int64_t end, double* partial) {
      moment_sums<decltype(kDegree)::value, kPowers>(x, y, degree, begin, end, partial);
    });
  });
}

// sum x^p (p = 0..2D) of a shared x (the y-independent half of moment_sums).
template <typename scalar_t>
void power_sums_of(const scalar_t* x, int64_t n, int64_t degree, double* out) {
  reduce_in_chunks(n, 2 * degree + 1, out, [&](int64_t begin, int64_t end, double* partial) {
    LaneSums<kDynamicDegree> sums(2 * degree + 1);
    LaneVector* acc = sums.data();
    for (int64_t i = begin; i < end; i += kLanes) {
      const int64_t count = std::min<int64_t>(kLanes, end - i);
      const LaneVector xs = load_group(x, i, end, 0.0);
      LaneVector term = zero_padding(splat<LaneVector>(1.0), count);
      for (int64_t p = 0; p <= 2 * degree; ++p, term *= xs) acc[p] += term;
    }
    fold_lanes(acc, 2 * degree + 1, partial);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> poly_moments_cpu(const at::Tensor& x_in, const at::Tensor& y_in,
                                                                int64_t degree) {
  check_moments_inputs(x_in, y_in, degree);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = y_in.contiguous();
  const int64_t n = y.size(-1);
  const int64_t x_rows = x.dim() == 2 ? x.size(0) : 1;
  const int64_t y_rows = y.dim() == 2 ? y.size(0) : 1;
  const auto wide = x.options().dtype(at::kDouble);
  std::vector<int64_t> x_batch(x.sizes().begin(), x.sizes().end() - 1), y_batch(y.sizes().begin(), y.sizes().end() - 1);
  at::Tensor power_sums = at::empty([&] { auto s = x_batch; s.push_back(2 * degree + 1); return s; }(), wide);
  at::Tensor cross_sums = at::empty([&] { auto s = y_batch; s.push_back(degree + 1); return s; }(), wide);
  at::Tensor square_sum = at::empty(y_batch, wide);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "poly_moments_cpu", [&] {
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    const scalar_t* y_data = y.const_data_ptr<scalar_t>();
    double* power_data = power_sums.mutable_data_ptr<double>();
    double* cross_data = cross_sums.mutable_data_ptr<double>();
    double* square_data = square_sum.mutable_data_ptr<double>();
    // each row's sums land in a scratch row (powers, then cross, then square), then in the outputs
    const bool shared_x = x_rows == 1 && y_rows > 1;
    if (shared_x) power_sums_of<scalar_t>(x_data, n, degree, power_data);
    const int64_t num_sums = (shared_x ? 0 : 2 * degree + 1) + degree + 2;
    const auto sums_of_row = [&](int64_t row) {
      std::vector<double> sums(num_sums);
      const scalar_t* y_row = y_data + row * n;
      if (shared_x) {
        row_moments<false>(x_data, y_row, n, degree, sums.data());
      } else {
        row_moments<true>(x_data + row * n, y_row, n, degree, sums.data());
        std::copy(sums.begin(), sums.begin() + 2 * degree + 1, power_data + row * (2 * degree + 1));
      }
      const double* rest = sums.data() + (shared_x ? 0 : 2 * degree + 1);
      std::copy(rest, rest + degree + 1, cross_data + row * (degree + 1));
      square_data[row] = rest[degree + 1];
    };
    const int64_t rows = y_rows;
    if (rows == 1) {
      sums_of_row(0);  // its chunks in parallel
      return;
    }
    // Rows in parallel (each row's chunks then run in its thread: the same fixed chunks, the same sums)
    at::parallel_for(0, rows, 1, [&](int64_t first, int64_t last) {
      for (int64_t row = first; row < last; ++row) sums_of_row(row);
    });
  });
  return {power_sums, cross_sums, square_sum};
}

// --- fit_poly_moments ---------------------------------------------------------------------------------------------

// One fit's quadratic form: the Hankel matrix A[j][k] = moments[j + k] (2D+1 numbers), b (D+1), s.
struct GramSystem {
  std::vector<double> moments, target;
  double offset = 0.0;
  double gram(int64_t j, int64_t k) const { return moments[j + k]; }
};

GramSystem gram_system(const double* power_sums, const double* cross_sums, double square_sum, int64_t terms) {
  GramSystem system;
  const double count = power_sums[0];
  system.moments.resize(2 * terms - 1);
  system.target.resize(terms);
  for (int64_t p = 0; p < 2 * terms - 1; ++p) system.moments[p] = power_sums[p] / count;
  for (int64_t j = 0; j < terms; ++j) system.target[j] = cross_sums[j] / count;
  system.offset = square_sum / count;
  return system;
}

// v, rounded on its own: the compiler may not fuse the product it holds into the next add (an FMA), which would
// keep a product that overflows in the reference (2 lr (u - b) -> inf) finite. Costs no instruction. Used where
// special values must come out as the reference's: the updates, the recorded losses, A c (the single fit's jumps
// keep their FMAs: they hand every stretch that could overflow to the stepwise loop).
template <typename T>
inline T rounded(T v) {
#if defined(__x86_64__) && defined(__AVX512F__)
  asm("" : "+v"(v));
#elif defined(__x86_64__)
  if constexpr (sizeof(T) <= 32) {
    asm("" : "+x"(v));
  } else {
    asm("" : "+m"(v));
  }
#else
  asm("" : "+m"(v));
#endif
  return v;
}

// Writes v (a whole number of 32-byte halves) to dst with streaming stores where dst is 32-byte aligned: the trace
// goes to memory without evicting the cache (the fit's tables, and the caller's code and data). Call
// finish_streaming() before the trace is read by another thread.
template <typename V>
inline void store_streaming(void* dst, const V& v) {
#if defined(__AVX__)
  if constexpr (sizeof(V) % 32 == 0) {
    if (reinterpret_cast<std::uintptr_t>(dst) % 32 == 0) {
      for (size_t offset = 0; offset < sizeof(V); offset += 32) {
        __m256i half;
        std::memcpy(&half, reinterpret_cast<const char*>(&v) + offset, 32);
        _mm256_stream_si256(reinterpret_cast<__m256i*>(static_cast<char*>(dst) + offset), half);
      }
      return;
    }
  }
#endif
  std::memcpy(dst, &v, sizeof(V));
}

inline void finish_streaming() {
#if defined(__AVX__)
  _mm_sfence();
#endif
}

template <typename T>
bool all_finite(const T* values, int64_t count) {
  return std::all_of(values, values + count, [](T v) { return std::isfinite(v); });
}

// Writes the loss of a step when it is recorded: `until_record` counts down to the next recorded step. `finite`
// turns false at a written loss that is not finite in the trace's dtype (a finite float64 loss can overflow float32).
template <typename scalar_t>
inline void record(double loss, int64_t record_every, int64_t& until_record, scalar_t*& trace, bool& finite) {
  if (--until_record == 0) {
    const scalar_t stored = static_cast<scalar_t>(loss);
    finite = finite && std::isfinite(stored);
    *trace++ = stored;
    until_record = record_every;
  }
}

// `steps` steps one at a time, as the reference steps (any degree, any values: inf and NaN propagate as there).
template <typename scalar_t>
void fit_single_stepwise(const GramSystem& system, int64_t terms, double lr, int64_t steps, int64_t record_every,
                         int64_t& until_record, double* c, scalar_t*& trace, bool& trace_finite) {
  std::vector<double> u(terms);
  for (int64_t step = 0; step < steps; ++step) {
    for (int64_t j = 0; j < terms; ++j) {
      double sum = 0.0;
      for (int64_t k = 0; k < terms; ++k) sum += rounded(system.gram(j, k) * c[k]);
      u[j] = sum;
    }
    if (until_record == 1) {
      double quadratic = 0.0, linear = 0.0;
      for (int64_t j = 0; j < terms; ++j) {
        quadratic += rounded(c[j] * u[j]);
        linear += rounded(c[j] * system.target[j]);
      }
      record(quadratic - rounded(2.0 * linear) + system.offset, record_every, until_record, trace, trace_finite);
    } else {
      --until_record;
    }
    for (int64_t j = 0; j < terms; ++j) c[j] -= rounded(2.0 * lr * (u[j] - system.target[j]));
  }
}

constexpr int kHalves = 2;                // lane vectors per jump
constexpr int kJump = kHalves * kLanes;  // steps per jump: one SIMD lane per step in between

// max(a, b), NaN if either is NaN (std::max drops a NaN second argument)
inline double nan_max(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b); }

// Per lane, the larger of `largest` and |v|; NaN where either is NaN.
inline LaneVector magnitude_max(LaneVector largest, LaneVector v) {
  const LaneVector magnitude = v < 0 ? -v : v;
  return largest >= magnitude || largest != largest ? largest : magnitude;
}

template <int K>
double max_row_sum(const double (&matrix)[K][K]) {
  double largest = 0.0;
  for (int a = 0; a < K; ++a) {
    double row = 0.0;
    for (int b = 0; b < K; ++b) row += std::fabs(matrix[a][b]);
    largest = nan_max(largest, row);
  }
  return largest;
}

// What the 16-step jumps of a fit of compile-time degree D take from A and lr alone: shared by every series with
// that A. With c_{t+j} = P_j c_t + q_j (P_j = M^j; q_j = L_j b, L_0 = 0, L_{j+1} = M L_j + 2 lr I), the loss of
// step t + j is a quadratic form in c_t alone:
//
//   loss_{t+j} = c_t.Q_j c_t + r_j.c_t + k_j,   Q_j = P_j^T A P_j,   r_j = R_j b,   R_j = 2 P_j^T (A L_j - I),
//                                               k_j = b.K_j b + s,   K_j = L_j^T A L_j - 2 L_j,
//
// so a block's 16 losses are 16 lanes of (D+1)(D+2)/2 + (D+1) multiply-adds from the products c_a c_b, and the
// iterates between block starts are never formed: c_{t+16} = P_16 c_t + L_16 b. Q_j and K_j are held per pair
// a <= b (doubled off the diagonal), step j in lane j % 8 of half j / 8.
template <int D>
struct JumpMaps {
  static constexpr int kTerms = D + 1;
  static constexpr int kPairs = kTerms * (kTerms + 1) / 2;
  LaneVector quadratic[kPairs][kHalves];
  LaneVector linear[kTerms][kTerms][kHalves];  // R_j[a][k]
  LaneVector constant[kPairs][kHalves];        // K_j
  double jump[kTerms][kTerms];                 // P_16
  double jump_offset[kTerms][kTerms];          // L_16
  // |c| at any step of a block from c_t is at most reach |c_t| + drift |b| (max norms), and |u - b| at most
  // gram_norm |c| + |b|; quadratic_norm is the largest |Q_j| entry. NaN where something is not finite.
  double reach = 1.0, drift = 0.0, gram_norm = 0.0, quadratic_norm = 0.0;

  JumpMaps(const double* moments, double lr) {  // moments: A's 2D + 1 Hankel entries
    double gram[kTerms][kTerms], step_matrix[kTerms][kTerms], power[kTerms][kTerms], offset[kTerms][kTerms];
    for (int a = 0; a < kTerms; ++a) {
      for (int b = 0; b < kTerms; ++b) {
        gram[a][b] = moments[a + b];
        step_matrix[a][b] = (a == b ? 1.0 : 0.0) - 2.0 * lr * gram[a][b];
        power[a][b] = a == b ? 1.0 : 0.0;
        offset[a][b] = 0.0;
      }
    }
    for (int j = 0;; ++j) {
      if (j == kJump) {
        std::copy(&power[0][0], &power[0][0] + kTerms * kTerms, &jump[0][0]);
        std::copy(&offset[0][0], &offset[0][0] + kTerms * kTerms, &jump_offset[0][0]);
        break;
      }
      add_step_form(gram, j, power, offset);
      reach = nan_max(reach, max_row_sum(power));
      drift = nan_max(drift, max_row_sum(offset));
      double next_power[kTerms][kTerms], next_offset[kTerms][kTerms];
      for (int a = 0; a < kTerms; ++a) {
        for (int b = 0; b < kTerms; ++b) {
          double sum = 0.0, offset_sum = a == b ? 2.0 * lr : 0.0;
          for (int k = 0; k < kTerms; ++k) {
            sum += step_matrix[a][k] * power[k][b];
            offset_sum += step_matrix[a][k] * offset[k][b];
          }
          next_power[a][b] = sum;
          next_offset[a][b] = offset_sum;
        }
      }
      std::copy(&next_power[0][0], &next_power[0][0] + kTerms * kTerms, &power[0][0]);
      std::copy(&next_offset[0][0], &next_offset[0][0] + kTerms * kTerms, &offset[0][0]);
    }
    gram_norm = max_row_sum(gram);
  }

  // Whether the jumps can be taken at all (A, lr and what they make are finite).
  bool finite() const {
    return all_finite(&jump[0][0], kTerms * kTerms) && all_finite(&jump_offset[0][0], kTerms * kTerms) &&
           std::isfinite(reach) && std::isfinite(drift) && std::isfinite(gram_norm) && std::isfinite(quadratic_norm);
  }

  // Whether blocks from coefficients of at most `largest` (max norm, at every block start) for targets of at most
  // `target_norm`, with losses' linear and constant terms of at most `form_norm`, can be jumped over: every
  // intermediate value of the stepwise loop (c, u - b, c.u, the update) and of the quadratic form stays below 1e300,
  // and the products c_a c_b and b_a b_b the form takes are not all below the normal range: `smallest`, the least
  // max norm of a nonzero c at a block start, and a nonzero |b| are at least 2^-511 (coefficients that small, with
  // a large lr's large Q_j, would give losses of 0 where the stepwise loop's are ~1e-300).
  bool safe(double largest, double smallest, double target_norm, double form_norm) const {
    constexpr double kTiny = 0x1p-511;  // its square is the smallest normal double
    if (smallest < kTiny || (target_norm > 0.0 && target_norm < kTiny)) return false;
    const double c_bound = reach * largest + drift * target_norm;
    const double u_bound = gram_norm * c_bound + target_norm;
    const double form_bound =
        nan_max(form_norm, quadratic_norm) * (kPairs + kTerms) * (largest * largest + largest + 1.0);
    return c_bound * (u_bound + 1.0) < 1e300 && form_bound < 1e300;  // false for NaN
  }

 private:
  // Lane j of the maps: Q_j, R_j, K_j from P = P_j and L = L_j.
  void add_step_form(const double (&gram)[kTerms][kTerms], int j, const double (&power)[kTerms][kTerms],
                     const double (&offset)[kTerms][kTerms]) {
    const int half = j / kLanes, lane = j % kLanes;
    double gram_power[kTerms][kTerms], gram_offset[kTerms][kTerms];  // A P, A L
    for (int a = 0; a < kTerms; ++a) {
      for (int b = 0; b < kTerms; ++b) {
        double sum = 0.0, offset_sum = 0.0;
        for (int k = 0; k < kTerms; ++k) {
          sum += gram[a][k] * power[k][b];
          offset_sum += gram[a][k] * offset[k][b];
        }
        gram_power[a][b] = sum;
        gram_offset[a][b] = offset_sum;
      }
    }
    // (L^T A L - 2 L)[a][b]
    const auto constant_entry = [&](int a, int b) {
      double sum = -2.0 * offset[a][b];
      for (int k = 0; k < kTerms; ++k) sum += offset[k][a] * gram_offset[k][b];
      return sum;
    };
    int pair = 0;
    for (int a = 0; a < kTerms; ++a) {
      for (int b = a; b < kTerms; ++b, ++pair) {
        double sum = 0.0;
        for (int k = 0; k < kTerms; ++k) sum += power[k][a] * gram_power[k][b];
        quadratic[pair][half][lane] = a == b ? sum : 2.0 * sum;
        quadratic_norm = nan_max(quadratic_norm, std::fabs(quadratic[pair][half][lane]));
        constant[pair][half][lane] = a == b ? constant_entry(a, a) : constant_entry(a, b) + constant_entry(b, a);
      }
      for (int b = 0; b < kTerms; ++b) {
        double sum = 0.0;
        for (int k = 0; k < kTerms; ++k) sum += power[k][a] * (gram_offset[k][b] - (k == b ? 1.0 : 0.0));
        linear[a][b][half][lane] = 2.0 * sum;
      }
    }
  }
};

// The jump tables of one series: its target b and offset s applied to the maps (r_j, k_j and q_16 = L_16 b).
template <int D>
struct TargetTables {
  static constexpr int kTerms = D + 1;
  LaneVector linear[kTerms][kHalves] = {};
  LaneVector constant[kHalves] = {};
  double jump_offset[kTerms] = {};
  double target_norm = 0.0;  // |b|
  double form_norm = 0.0;    // the largest |r_j| and |k_j| entry

  TargetTables() = default;
  TargetTables(const JumpMaps<D>& maps, const double* target, double offset) {
    LaneVector norm = splat<LaneVector>(0.0);
    const auto take = [&](LaneVector v) { norm = magnitude_max(norm, v); };
    for (int h = 0; h < kHalves; ++h) {
      LaneVector value = splat<LaneVector>(offset);
      int pair = 0;
      for (int a = 0; a < kTerms; ++a) {
        for (int b = a; b < kTerms; ++b, ++pair) value += maps.constant[pair][h] * (target[a] * target[b]);
        LaneVector sum = splat<LaneVector>(0.0);
        for (int k = 0; k < kTerms; ++k) sum += maps.linear[a][k][h] * target[k];
        linear[a][h] = sum;
        take(sum);
      }
      constant[h] = value;
      take(value);
    }
    for (int lane = 0; lane < kLanes; ++lane) form_norm = nan_max(form_norm, norm[lane]);
    for (int a = 0; a < kTerms; ++a) {
      double sum = 0.0;
      for (int k = 0; k < kTerms; ++k) sum += maps.jump_offset[a][k] * target[k];
      jump_offset[a] = sum;
      target_norm = nan_max(target_norm, std::fabs(target[a]));
    }
  }
};

// The 16 losses of kSeries blocks (series) from their starts: coefficient(a, series) = c_a, product(p, series) =
// c_a c_b for the p-th pair a <= b. Term by term across the series, so that a term's table vectors are loaded once
// for all of them (each series' sum still runs in the same order: constant, linear terms, pairs).
template <int D, int kSeries, typename Coefficient, typename Product>
inline void block_losses(const JumpMaps<D>& maps, const TargetTables<D>* targets, Coefficient coefficient,
                         Product product, LaneVector (&losses)[kSeries][kHalves]) {
#pragma GCC unroll 16
  for (int series = 0; series < kSeries; ++series) {
#pragma GCC unroll 2
    for (int h = 0; h < kHalves; ++h) losses[series][h] = targets[series].constant[h];
  }
#pragma GCC unroll 16
  for (int a = 0; a <= D; ++a) {
#pragma GCC unroll 16
    for (int series = 0; series < kSeries; ++series) {
      const double c = coefficient(a, series);
#pragma GCC unroll 2
      for (int h = 0; h < kHalves; ++h) losses[series][h] += targets[series].linear[a][h] * c;
    }
  }
#pragma GCC unroll 64
  for (int p = 0; p < JumpMaps<D>::kPairs; ++p) {
    LaneVector quadratic[kHalves];
#pragma GCC unroll 2
    for (int h = 0; h < kHalves; ++h) quadratic[h] = maps.quadratic[p][h];
#pragma GCC unroll 16
    for (int series = 0; series < kSeries; ++series) {
      const double c = product(p, series);
#pragma GCC unroll 2
      for (int h = 0; h < kHalves; ++h) losses[series][h] += quadratic[h] * c;
    }
  }
}

// Writes a block's losses of the steps the countdown marks at `row` (advanced past them); finite_losses and
// finite_stored take x - x of each written loss, in float64 and as stored (they stay 0 while all are finite).
template <typename scalar_t, typename Stored>
inline void store_block(const LaneVector (&losses)[kHalves], int64_t record_every, int64_t& until_record,
                        scalar_t*& row, LaneVector& finite_losses, Stored& finite_stored) {
  if (record_every == 1) {  // every step recorded: whole vector stores
#pragma GCC unroll 2
    for (int h = 0; h < kHalves; ++h) {
      const Stored stored = __builtin_convertvector(losses[h], Stored);
      store_streaming(row, stored);
      row += kLanes;
      finite_losses += losses[h] - losses[h];
      finite_stored += stored - stored;
    }
    return;
  }
  for (int j = 0; j < kJump; ++j) {
    if (--until_record == 0) {
      const double loss = losses[j / kLanes][j % kLanes];
      const scalar_t stored = static_cast<scalar_t>(loss);
      *row++ = stored;
      finite_losses[j % kLanes] += loss - loss;
      finite_stored[j % kLanes] += stored - stored;
      until_record = record_every;
    }
  }
}

// kLanes values of the trace's dtype
template <typename scalar_t>
struct StoredLanesOf {
  typedef scalar_t type __attribute__((vector_size(kLanes * sizeof(scalar_t))));
};
template <typename scalar_t>
using StoredLanes = typename StoredLanesOf<scalar_t>::type;

template <typename Stored>
bool lanes_zero(const Stored& v) {
  for (int lane = 0; lane < kLanes; ++lane) {
    if (v[lane] != 0) return false;
  }
  return true;
}

// `blocks` jumps of 16 steps from c, recording the losses of the steps the countdown marks. Returns false (c and
// trace then unspecified) when a coefficient or a recorded loss is not finite, or the coefficients grew to where a
// step of the stepwise loop could overflow: the caller redoes those steps one at a time, so that inf and NaN come
// out as the stepwise loop makes them. When it returns true, `stored_finite` says whether every written loss is
// finite in the trace's dtype (float32 can overflow where the float64 loss does not; the steps go on as they do).
template <int D, typename scalar_t>
bool fit_single_jumps(const JumpMaps<D>& maps, const TargetTables<D>& target, int64_t blocks, int64_t record_every,
                      int64_t& until_record, double* c_io, scalar_t*& trace, bool& stored_finite) {
  constexpr int kTerms = D + 1;
  constexpr int kPairs = JumpMaps<D>::kPairs;
  double c[kTerms];
  std::copy(c_io, c_io + kTerms, c);
  LaneVector finite_losses = splat<LaneVector>(0.0);
  StoredLanes<scalar_t> finite_stored = StoredLanes<scalar_t>{} + scalar_t(0);
  // max |c| at the blocks' starts (and the end); the least nonzero of those block maxima
  double largest = 0.0, smallest = std::numeric_limits<double>::infinity();
  for (int64_t block = 0; block < blocks; ++block) {
    double block_largest = 0.0;
#pragma GCC unroll 16
    for (int a = 0; a < kTerms; ++a) block_largest = std::max(block_largest, std::fabs(c[a]));
    largest = std::max(largest, block_largest);
    smallest = block_largest > 0.0 ? std::min(smallest, block_largest) : smallest;
    if (until_record <= kJump) {  // a recorded step in this block: its 16 losses, lane per step
      double products[kPairs];
      int pair = 0;
#pragma GCC unroll 16
      for (int a = 0; a < kTerms; ++a) {
#pragma GCC unroll 16
        for (int b = a; b < kTerms; ++b) products[pair++] = c[a] * c[b];
      }
      LaneVector losses[1][kHalves];
      block_losses<D, 1>(
          maps, &target, [&](int a, int) { return c[a]; }, [&](int p, int) { return products[p]; }, losses);
      store_block(losses[0], record_every, until_record, trace, finite_losses, finite_stored);
    } else {
      until_record -= kJump;
    }
    double next[kTerms];  // the chain: c_{t+16} = P_16 c_t + q_16
#pragma GCC unroll 16
    for (int a = 0; a < kTerms; ++a) {
      double sum = target.jump_offset[a];
#pragma GCC unroll 16
      for (int b = 0; b < kTerms; ++b) sum += maps.jump[a][b] * c[b];
      next[a] = sum;
    }
    std::copy(next, next + kTerms, c);
  }
  std::copy(c, c + kTerms, c_io);
  for (int a = 0; a < kTerms; ++a) largest = std::max(largest, std::fabs(c[a]));
  // a NaN c stays NaN to the end: all_finite sees it
  const bool ok = all_finite(c, kTerms) && lanes_zero(finite_losses) &&
                  maps.safe(largest, smallest, target.target_norm, target.form_norm);
  stored_finite = stored_finite && lanes_zero(finite_stored);
  return ok;
}

// Where a single fit stands: its coefficients, the countdown to its next recorded step, where its next loss goes,
// whether every loss written so far is finite as stored.
template <int D, typename scalar_t>
struct SingleFitState {
  double c[D + 1];
  int64_t until_record;
  scalar_t* trace;
  bool trace_finite;
};

// Up to `blocks` jumps from `state`, in segments of at most 256, each checked (fit_single_jumps). Returns the
// number taken: fewer where a segment failed, the state then at that segment's start.
template <int D, typename scalar_t>
int64_t jump_segments(const JumpMaps<D>& maps, const TargetTables<D>& target, int64_t blocks, int64_t record_every,
                      SingleFitState<D, scalar_t>& state) {
  constexpr int64_t kSegmentBlocks = 256;
  int64_t done = 0;
  while (done < blocks) {
    const int64_t segment = std::min(kSegmentBlocks, blocks - done);
    SingleFitState<D, scalar_t> next = state;
    bool segment_finite = true;
    if (!fit_single_jumps<D>(maps, target, segment, record_every, next.until_record, next.c, next.trace,
                             segment_finite)) {
      break;
    }
    next.trace_finite = next.trace_finite && segment_finite;
    state = next;
    done += segment;
  }
  return done;
}

// The state `blocks` jumps after `start`, its coefficients from (P_16, q_16) raised to that power by repeated
// squaring (2 log2(blocks) jumps composed, not the chain of blocks): its countdown and trace position follow from
// the step it stands at.
template <int D, typename scalar_t>
SingleFitState<D, scalar_t> state_after(const JumpMaps<D>& maps, const TargetTables<D>& target,
                                        const SingleFitState<D, scalar_t>& start, int64_t blocks,
                                        int64_t record_every) {
  constexpr int kTerms = D + 1;
  // the affine maps c -> P c + q: `power` = (P_16, q_16)^(2^k), `total` the product of those the bits of blocks take
  double power[kTerms][kTerms], power_offset[kTerms], total[kTerms][kTerms], total_offset[kTerms];
  for (int a = 0; a < kTerms; ++a) {
    for (int b = 0; b < kTerms; ++b) {
      power[a][b] = maps.jump[a][b];
      total[a][b] = a == b ? 1.0 : 0.0;
    }
    power_offset[a] = target.jump_offset[a];
    total_offset[a] = 0.0;
  }
  // (P, q) after (P', q'): c -> P (P' c + q') + q
  const auto compose = [](const double (&outer)[kTerms][kTerms], const double (&outer_offset)[kTerms],
                          double (&inner)[kTerms][kTerms], double (&inner_offset)[kTerms]) {
    double product[kTerms][kTerms], offset[kTerms];
    for (int a = 0; a < kTerms; ++a) {
      offset[a] = outer_offset[a];
      for (int k = 0; k < kTerms; ++k) offset[a] += outer[a][k] * inner_offset[k];
      for (int b = 0; b < kTerms; ++b) {
        double sum = 0.0;
        for (int k = 0; k < kTerms; ++k) sum += outer[a][k] * inner[k][b];
        product[a][b] = sum;
      }
    }
    std::copy(&product[0][0], &product[0][0] + kTerms * kTerms, &inner[0][0]);
    std::copy(offset, offset + kTerms, inner_offset);
  };
  for (int64_t remaining = blocks; remaining > 0; remaining >>= 1) {
    if (remaining & 1) compose(power, power_offset, total, total_offset);
    if (remaining > 1) {
      double square[kTerms][kTerms], square_offset[kTerms];
      std::copy(&power[0][0], &power[0][0] + kTerms * kTerms, &square[0][0]);
      std::copy(power_offset, power_offset + kTerms, square_offset);
      compose(square, square_offset, power, power_offset);
    }
  }
  SingleFitState<D, scalar_t> state = start;
  for (int a = 0; a < kTerms; ++a) {
    double sum = total_offset[a];
    for (int b = 0; b < kTerms; ++b) sum += total[a][b] * start.c[b];
    state.c[a] = sum;
  }
  // the steps from the start, and the recorded ones among them (every record_every-th, from the start's countdown)
  const int64_t steps = blocks * kJump;
  const int64_t recorded = steps < start.until_record ? 0 : (steps - start.until_record) / record_every + 1;
  state.trace = start.trace + recorded;
  state.until_record = start.until_record - steps + recorded * record_every;  // in this order: no overflow
  state.trace_finite = true;
  return state;
}

// Up to `blocks` jumps from `state`, `done` counting the steps taken; whether all were taken (else the state stands
// at the start of the segment that failed). At least kSplitBlocks jumps run in two halves, in parallel: the second
// from its start reached by repeated squaring (whatever the thread count, so the result does not depend on it);
// where the second half fails a segment, the first half's end goes on as one chain.
template <int D, typename scalar_t>
bool jump_phase(const JumpMaps<D>& maps, const TargetTables<D>& target, int64_t blocks, int64_t record_every,
                SingleFitState<D, scalar_t>& state, int64_t& done) {
  constexpr int64_t kSplitBlocks = 4096;  // 65,536 steps: each half well past a thread's start-up
  int64_t taken = 0;
  if (blocks >= kSplitBlocks) {
    const int64_t first = blocks / 2;
    SingleFitState<D, scalar_t> second = state_after(maps, target, state, first, record_every);
    if (all_finite(second.c, D + 1)) {
      int64_t halves_taken[2] = {0, 0};
      at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
        for (int64_t half = begin; half < end; ++half) {
          halves_taken[half] = half == 0 ? jump_segments(maps, target, first, record_every, state)
                                         : jump_segments(maps, target, blocks - first, record_every, second);
          finish_streaming();
        }
      });
      taken = halves_taken[0];
      if (taken < first) {
        done += taken * kJump;
        return false;
      }
      if (halves_taken[1] == blocks - first) {
        second.trace_finite = second.trace_finite && state.trace_finite;
        state = second;
        taken = blocks;
      }
    }
  }
  taken += jump_segments(maps, target, blocks - taken, record_every, state);
  done += taken * kJump;
  return taken == blocks;
}

// A single fit: jumps of 16 steps in segments, each checked (jump_phase); a segment that ends with something not
// finite is redone one step at a time from its start, and so is every step after it. The block of the last
// recorded step steps (the loss auto checks comes from the stepwise form, which its bound is of), and so do
// degrees above kMaxUnrolledDegree, systems that are not finite and the last steps (fewer than 16). Returns whether
// every written loss is finite.
template <int kDegree, typename scalar_t>
bool fit_single(const GramSystem& system, int64_t terms, double lr, int64_t steps, int64_t record_every,
                double* c, scalar_t* trace) {
  bool trace_finite = true;
  int64_t until_record = 1;  // step 0 is recorded
  int64_t done = 0;
  if constexpr (kDegree != kDynamicDegree) {
    const bool finite_system = all_finite(system.moments.data(), 2 * terms - 1) &&
                               all_finite(system.target.data(), terms) && std::isfinite(system.offset) &&
                               all_finite(c, terms);
    std::optional<JumpMaps<kDegree>> maps;  // built only where jumps can be taken (a few microseconds)
    if (finite_system && steps >= kJump) maps.emplace(system.moments.data(), lr);
    if (maps && maps->finite()) {
      const TargetTables<kDegree> target(*maps, system.target.data(), system.offset);
      SingleFitState<kDegree, scalar_t> state;
      std::copy(c, c + terms, state.c);
      state.until_record = until_record;
      state.trace = trace;
      state.trace_finite = true;
      const int64_t records = fit_records(steps, record_every);
      const int64_t last_recorded = records > 0 ? (records - 1) * record_every : -1;
      if (jump_phase(*maps, target, (last_recorded >= 0 ? last_recorded : steps) / kJump, record_every, state, done) &&
          last_recorded >= 0) {
        fit_single_stepwise(system, terms, lr, last_recorded + 1 - done, record_every, state.until_record, state.c,
                            state.trace, state.trace_finite);
        done = last_recorded + 1;
        jump_phase(*maps, target, (steps - done) / kJump, record_every, state, done);
      }
      std::copy(state.c, state.c + terms, c);
      until_record = state.until_record;
      trace = state.trace;
      trace_finite = state.trace_finite;
    }
  }
  fit_single_stepwise(system, terms, lr, steps - done, record_every, until_record, c, trace, trace_finite);
  finish_streaming();
  return trace_finite;
}

// v as the exact loop needs it (rounded on its own: see rounded()) or, in the fused loop, free to become part of an
// FMA.
template <bool kExact, typename T>
inline T term(T v) {
  if constexpr (kExact) {
    return rounded(v);
  } else {
    return v;
  }
}

// Batched fits, SIMD across series: kGroup vectors of kLanes series step together (independent chains in flight).
// The Hankel moments m[p] = power_sums[p] / N are lane vectors (equal lanes when the series share x). Losses are
// kept for kPending records and then written row by row (a series' trace is a row of the (B, T) output), from
// record `next_record` on (advanced past them); `until_record` counts down to the next recorded step (and is left
// counting from the end). trace_finite[series] turns false at a written loss that is not finite.
//
// Steps run in segments of kSegment. A segment whose every intermediate is bounded far below the float64 range
// (from the coefficients at its start, the growth of a step, 1 + 2 lr |A|, and |b|, s) runs fused: multiply-adds
// as FMAs, about half the instructions. There no value can overflow, so the fused steps differ from the exact ones
// by rounding alone. Other segments (coefficients that may overflow, systems that are not finite) run exact:
// every product rounded on its own, in the reference's order, so inf and NaN come out as the reference's.
template <int kDegree, int kGroup, typename scalar_t>
void fit_lanes(const LaneVector* moments, const LaneVector* target, const LaneVector* offset, int64_t degree,
               double lr, int64_t steps, int64_t record_every, int64_t& until_record, int64_t& next_record,
               LaneVector* c, scalar_t* trace, int64_t records, int64_t live_series, bool* trace_finite) {
  using Stored = StoredLanes<scalar_t>;
  Stored finite_stored[kGroup];  // per lane 0 while every loss, as written, is finite (x - x = 0)
  for (int g = 0; g < kGroup; ++g) finite_stored[g] = Stored{} + scalar_t(0);
  constexpr int kPending = 8;
  constexpr int64_t kSegment = 64;
  const int64_t deg = effective_degree<kDegree>(degree);
  constexpr int kStorage = kDegree == kDynamicDegree ? 1 : kDegree + 1;
  std::vector<LaneVector> dynamic_u(kDegree == kDynamicDegree ? (deg + 1) * kGroup : 0);
  LaneVector pending[kPending][kGroup];
  int pending_count = 0;
  int64_t first_pending = next_record;
  const auto flush = [&] {
    for (int64_t series = 0; series < live_series; ++series) {
      scalar_t* row = trace + series * records + first_pending;
      for (int r = 0; r < pending_count; ++r) row[r] = static_cast<scalar_t>(pending[r][series / kLanes][series % kLanes]);
    }
    first_pending += pending_count;
    pending_count = 0;
  };
  // The group's norms (max over its lanes): |A| (max row sum), |b|, s; NaN where something is not finite.
  double gram_norm = 0.0, target_norm = 0.0, offset_norm = 0.0;
  for (int g = 0; g < kGroup; ++g) {
    for (int lane = 0; lane < kLanes; ++lane) {
      for (int64_t a = 0; a <= deg; ++a) {
        double row = 0.0;
        for (int64_t k = 0; k <= deg; ++k) row += std::fabs(moments[g * (2 * deg + 1) + a + k][lane]);
        gram_norm = std::isfinite(row) ? std::max(gram_norm, row) : NAN;
        const double b = std::fabs(target[g * (deg + 1) + a][lane]);
        target_norm = std::isfinite(b) ? std::max(target_norm, b) : NAN;
      }
      const double s = std::fabs(offset[g][lane]);
      offset_norm = std::isfinite(s) ? std::max(offset_norm, s) : NAN;
    }
  }
  const double growth = std::pow(1.0 + 2.0 * lr * gram_norm, static_cast<double>(kSegment));
  // Whether kSegment steps from the current coefficients keep every intermediate below 1e300.
  const auto fusable = [&] {
    double largest = 0.0;
    for (int g = 0; g < kGroup; ++g) {
      for (int64_t a = 0; a <= deg; ++a) {
        for (int lane = 0; lane < kLanes; ++lane) {
          const double v = std::fabs(c[g * (deg + 1) + a][lane]);
          largest = v <= largest ? largest : v;  // NaN stays
        }
      }
    }
    const double c_bound = growth * (largest + kSegment * 2.0 * lr * target_norm);
    const double u_bound = gram_norm * c_bound + target_norm;
    return 4.0 * (deg + 1) * c_bound * (u_bound + 1.0) + offset_norm < 1e300;  // false for NaN
  };
  const LaneVector two_lr = splat<LaneVector>(2.0 * lr);
  // exact: std::true_type or std::false_type (a generic lambda: torch <= 2.12 builds extensions as C++17)
  const auto run = [&](auto exact, int64_t first, int64_t last) {
    constexpr bool kExact = decltype(exact)::value;
    for (int64_t step = first; step < last; ++step) {
      const bool recorded = --until_record == 0;
#pragma GCC unroll 4
      for (int g = 0; g < kGroup; ++g) {
        LaneVector u_storage[kStorage];
        LaneVector* u = kDegree == kDynamicDegree ? dynamic_u.data() + g * (deg + 1) : u_storage;
        LaneVector* cg = c + g * (deg + 1);
        const LaneVector* mg = moments + g * (2 * deg + 1);
        const LaneVector* bg = target + g * (deg + 1);
#pragma GCC unroll 16
        for (int64_t a = 0; a <= deg; ++a) {
          LaneVector sum = term<kExact>(mg[a] * cg[0]);  // exact: not fused into the next add either
#pragma GCC unroll 16
          for (int64_t k = 1; k <= deg; ++k) sum += term<kExact>(mg[a + k] * cg[k]);
          u[a] = sum;
        }
        if (recorded) {  // c.u - 2 c.b + s, in the reference's order (where terms overflow, the order decides)
          LaneVector quadratic = term<kExact>(cg[0] * u[0]), linear = term<kExact>(cg[0] * bg[0]);
#pragma GCC unroll 16
          for (int64_t a = 1; a <= deg; ++a) {
            quadratic += term<kExact>(cg[a] * u[a]);
            linear += term<kExact>(cg[a] * bg[a]);
          }
          pending[pending_count][g] = quadratic - term<kExact>(2.0 * linear) + offset[g];
          const Stored stored = __builtin_convertvector(pending[pending_count][g], Stored);
          finite_stored[g] += stored - stored;
        }
#pragma GCC unroll 16
        for (int64_t a = 0; a <= deg; ++a) cg[a] -= term<kExact>(two_lr * (u[a] - bg[a]));
      }
      if (recorded) {
        until_record = record_every;
        if (++pending_count == kPending) flush();
      }
    }
  };
  for (int64_t step = 0; step < steps; step += kSegment) {
    const int64_t last = std::min(steps, step + kSegment);
    if (fusable()) {
      run(std::false_type{}, step, last);
    } else {
      run(std::true_type{}, step, last);
    }
  }
  flush();
  next_record = first_pending;
  for (int64_t series = 0; series < live_series; ++series) {
    trace_finite[series] = trace_finite[series] && finite_stored[series / kLanes][series % kLanes] == scalar_t(0);
  }
}

// kLanes series that share A (lane = series): `blocks` jumps of 16 steps, as fit_single_jumps does them (its
// contract), the chain c_{t+16} = P_16 c_t + q_16 SIMD across the series, and each series' 16 losses a vector per
// half block (lane = step) written whole into its row, rows[series], advanced past them. target_norm and form_norm
// are the series' largest.
template <int D, typename scalar_t>
bool fit_lanes_jumps(const JumpMaps<D>& maps, const TargetTables<D> (&targets)[kLanes], double target_norm,
                     double form_norm, int64_t blocks, int64_t record_every, int64_t& until_record, LaneVector* c_io,
                     scalar_t* (&rows)[kLanes], bool (&stored_finite)[kLanes]) {
  constexpr int kTerms = D + 1;
  constexpr int kPairs = JumpMaps<D>::kPairs;
  LaneVector jump_offset[kTerms], c[kTerms];  // q_16 and c per series
  for (int a = 0; a < kTerms; ++a) {
    alignas(64) double lanes[kLanes];
    for (int lane = 0; lane < kLanes; ++lane) lanes[lane] = targets[lane].jump_offset[a];
    std::memcpy(&jump_offset[a], lanes, sizeof(LaneVector));
    c[a] = c_io[a];
  }
  LaneVector finite_losses = splat<LaneVector>(0.0);
  StoredLanes<scalar_t> finite_stored[kLanes];
  for (auto& v : finite_stored) v = StoredLanes<scalar_t>{} + scalar_t(0);
  // per series, max |c| at the blocks' starts (NaN stays), and the least nonzero of those block maxima
  LaneVector largest = splat<LaneVector>(0.0), smallest = splat<LaneVector>(std::numeric_limits<double>::infinity());
  const auto take_largest = [&] {
    LaneVector block_largest = splat<LaneVector>(0.0);
#pragma GCC unroll 16
    for (int a = 0; a < kTerms; ++a) block_largest = magnitude_max(block_largest, c[a]);
    largest = magnitude_max(largest, block_largest);
    smallest = block_largest > 0.0 && block_largest < smallest ? block_largest : smallest;
  };
  for (int64_t block = 0; block < blocks; ++block) {
    take_largest();
    if (until_record <= kJump) {
      // c_a and the products c_a c_b of every series, in memory: an FMA broadcasts a lane from there
      alignas(64) double coefficients[kTerms][kLanes], products[kPairs][kLanes];
      int pair = 0;
#pragma GCC unroll 16
      for (int a = 0; a < kTerms; ++a) {
        std::memcpy(coefficients[a], &c[a], sizeof(LaneVector));
#pragma GCC unroll 16
        for (int b = a; b < kTerms; ++b, ++pair) {
          const LaneVector product = c[a] * c[b];
          std::memcpy(products[pair], &product, sizeof(LaneVector));
        }
      }
      // read back from memory (a broadcast load, the FMA's own operand), not shuffled out of the registers: the
      // shuffles would take the FMA port
      asm volatile("" : : "r"(&coefficients[0][0]), "r"(&products[0][0]) : "memory");
      LaneVector losses[kLanes][kHalves];
      block_losses<D, kLanes>(
          maps, targets, [&](int a, int series) { return coefficients[a][series]; },
          [&](int p, int series) { return products[p][series]; }, losses);
      int64_t countdown = until_record;
#pragma GCC unroll 8
      for (int series = 0; series < kLanes; ++series) {
        countdown = until_record;
        store_block(losses[series], record_every, countdown, rows[series], finite_losses, finite_stored[series]);
      }
      until_record = countdown;
    } else {
      until_record -= kJump;
    }
    LaneVector next[kTerms];
#pragma GCC unroll 16
    for (int a = 0; a < kTerms; ++a) {
      LaneVector sum = jump_offset[a];
#pragma GCC unroll 16
      for (int b = 0; b < kTerms; ++b) sum += maps.jump[a][b] * c[b];
      next[a] = sum;
    }
    std::copy(next, next + kTerms, c);
  }
  take_largest();
  double group_largest = 0.0, group_smallest = std::numeric_limits<double>::infinity();
  for (int lane = 0; lane < kLanes; ++lane) {
    group_largest = nan_max(group_largest, largest[lane]);
    group_smallest = std::min(group_smallest, smallest[lane]);
  }
  std::copy(c, c + kTerms, c_io);
  bool ok = lanes_zero(finite_losses) && maps.safe(group_largest, group_smallest, target_norm, form_norm);
  for (int a = 0; a < kTerms; ++a) {
    for (int lane = 0; lane < kLanes; ++lane) ok = ok && std::isfinite(c[a][lane]);
  }
  if (ok) {
    for (int lane = 0; lane < kLanes; ++lane) stored_finite[lane] = stored_finite[lane] && lanes_zero(finite_stored[lane]);
  }
  return ok;
}

// Batched fits of compile-time degree D on kLanes series that share A (the lanes' moments, target b, offset s
// and coefficients c as fit_lanes takes them): jumps of 16 steps in checked segments, as a single fit takes them,
// and fit_lanes for the steps after (the last, fewer than 16, and all from a segment that ended with something
// not finite or close to overflow, redone from its start).
template <int D, typename scalar_t>
void fit_lanes_with_jumps(const JumpMaps<D>& maps, const LaneVector* moments, const LaneVector* target,
                          const LaneVector* offset, double lr, int64_t steps, int64_t record_every, LaneVector* c,
                          scalar_t* trace, int64_t records, int64_t live_series, bool* trace_finite) {
  constexpr int kTerms = D + 1;
  TargetTables<D> targets[kLanes];
  double target_norm = 0.0, form_norm = 0.0;
  for (int lane = 0; lane < kLanes; ++lane) {
    double b[kTerms];
    for (int a = 0; a < kTerms; ++a) b[a] = target[a][lane];
    targets[lane] = TargetTables<D>(maps, b, offset[0][lane]);
    target_norm = nan_max(target_norm, targets[lane].target_norm);
    form_norm = nan_max(form_norm, targets[lane].form_norm);
  }
  // rows of the series past live_series (lanes that fit nothing) go to a scratch row
  std::vector<scalar_t> scratch(live_series < kLanes ? records : 0);
  scalar_t* rows[kLanes];
  for (int lane = 0; lane < kLanes; ++lane) rows[lane] = lane < live_series ? trace + lane * records : scratch.data();
  std::array<scalar_t*, kLanes> row_starts;
  std::copy(rows, rows + kLanes, row_starts.begin());
  bool stored_finite[kLanes];
  std::fill(stored_finite, stored_finite + kLanes, true);
  int64_t until_record = 1, done = 0, written = 0;
  // up to `blocks` jumps, in checked segments of 16; whether all were taken (else c stands at the failed segment)
  const auto jump = [&](int64_t blocks) {
    constexpr int64_t kSegmentBlocks = 16;
    for (int lane = 0; lane < kLanes; ++lane) rows[lane] = row_starts[lane] + written;
    bool all_taken = maps.finite() && std::isfinite(target_norm) && std::isfinite(form_norm);
    for (int64_t taken = 0; all_taken && taken < blocks;) {
      const int64_t segment = std::min(kSegmentBlocks, blocks - taken);
      LaneVector start[kTerms];
      std::copy(c, c + kTerms, start);
      scalar_t* rows_at_start[kLanes];
      std::copy(rows, rows + kLanes, rows_at_start);
      const int64_t until_record_at_start = until_record;
      if (!fit_lanes_jumps<D>(maps, targets, target_norm, form_norm, segment, record_every, until_record, c, rows,
                              stored_finite)) {
        std::copy(start, start + kTerms, c);
        std::copy(rows_at_start, rows_at_start + kLanes, rows);
        until_record = until_record_at_start;
        all_taken = false;
        break;
      }
      taken += segment;
      done += segment * kJump;
    }
    finish_streaming();
    written = rows[0] - row_starts[0];
    return all_taken;
  };
  const auto step = [&](int64_t count) {
    fit_lanes<D, 1, scalar_t>(moments, target, offset, D, lr, count, record_every, until_record, written, c, trace,
                              records, live_series, trace_finite);
    done += count;
  };
  // the jumps stop before the block of the last recorded step, which steps: the loss auto checks (its bound is
  // the stepwise form's) comes from the stepwise loop; then jumps to the last 16 or fewer steps
  const int64_t last_recorded = records > 0 ? (records - 1) * record_every : -1;
  if (jump((last_recorded >= 0 ? last_recorded : steps) / kJump) && last_recorded >= 0) {
    step(last_recorded + 1 - done);
    jump((steps - done) / kJump);
  }
  step(steps - done);
  for (int64_t series = 0; series < live_series; ++series) {
    trace_finite[series] = trace_finite[series] && stored_finite[series];
  }
}

// The bound of pykernels._auto.loss_bound on the relative error of the loss `loss` computed from the statistics at
// `coeffs`: eps_64 M / |loss|, M = (sqrt(s) + sum_k |c_k| sqrt(A_kk))^2 (0 where M = 0), in the Python form's order
// (the products rounded, summed left to right, then added to sqrt(s)).
template <typename scalar_t>
double loss_bound(const double* power_sums, double square_sum, const scalar_t* coeffs, int64_t terms, double loss) {
  const double count = power_sums[0];
  double sum = 0.0;
  for (int64_t k = 0; k < terms; ++k) {
    sum += rounded(std::fabs(static_cast<double>(coeffs[k])) * rounded(std::sqrt(power_sums[2 * k] / count)));
  }
  const double scale = rounded(std::sqrt(square_sum / count)) + sum;
  const double moment = rounded(scale * scale);
  return moment == 0.0 ? 0.0 : rounded(std::numeric_limits<double>::epsilon() * moment) / std::fabs(loss);
}

// fit_poly_moments, and per series what fit_poly(method="auto") checks before it keeps a fit on the statistics:
// whether its coefficients and every recorded loss are finite (counted as the trace is written, not in a pass
// over it) and the bound on its last loss's error (0 without a recorded loss).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fit_poly_moments_checked_cpu(
    const at::Tensor& power_sums_in, const at::Tensor& cross_sums_in, const at::Tensor& square_sum_in,
    const at::Tensor& coeffs_in, double lr, int64_t steps, int64_t record_every) {
  check_fit_moments_inputs(power_sums_in, cross_sums_in, square_sum_in, coeffs_in, steps, record_every);
  const bool batched = cross_sums_in.dim() == 2;
  const int64_t series = batched ? cross_sums_in.size(0) : 1;
  const int64_t terms = coeffs_in.size(-1);
  const int64_t degree = terms - 1;
  const int64_t records = fit_records(steps, record_every);
  const at::Tensor power_sums = power_sums_in.contiguous();
  const at::Tensor cross_sums = cross_sums_in.contiguous();
  const at::Tensor square_sum = square_sum_in.contiguous();
  const bool shared_x = power_sums.dim() == 1;
  // the iterates in float64, written back in coeffs' dtype
  at::Tensor c64 = (batched ? coeffs_in.expand({series, terms}) : coeffs_in).to(at::kDouble).contiguous().clone();
  at::Tensor trace = at::empty(batched ? at::IntArrayRef{series, records} : at::IntArrayRef{records},
                               coeffs_in.options());
  const std::vector<int64_t> batch = batched ? std::vector<int64_t>{series} : std::vector<int64_t>{};
  at::Tensor finite = at::ones(batch, coeffs_in.options().dtype(at::kBool));
  at::Tensor last_loss_bound = at::zeros(batch, coeffs_in.options().dtype(at::kDouble));
  bool* finite_data = finite.mutable_data_ptr<bool>();
  const double* power_data = power_sums.const_data_ptr<double>();
  const double* cross_data = cross_sums.const_data_ptr<double>();
  const double* square_data = square_sum.const_data_ptr<double>();
  double* c_data = c64.mutable_data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(coeffs_in.scalar_type(), "fit_poly_moments_cpu", [&] {
    scalar_t* trace_data = trace.mutable_data_ptr<scalar_t>();
    dispatch_degree(degree, [&](auto kDegree) {
      constexpr int kDeg = decltype(kDegree)::value;
      if (!batched) {
        const GramSystem system = gram_system(power_data, cross_data, square_data[0], terms);
        finite_data[0] = fit_single<kDeg, scalar_t>(system, terms, lr, steps, record_every, c_data, trace_data);
        return;
      }
      // Series in groups of kGroup lane vectors, the groups in parallel: fit_group(moments, target, offset, c,
      // first series, live series) fits one from its lanes (as fit_lanes takes them).
      const auto fit_in_groups = [&](auto group_size, auto fit_group) {
        constexpr int kGroup = decltype(group_size)::value;
        constexpr int64_t kGroupSeries = kGroup * kLanes;
        const int64_t groups = (series + kGroupSeries - 1) / kGroupSeries;
        at::parallel_for(0, groups, 1, [&](int64_t first, int64_t last) {
          std::vector<LaneVector> moments(kGroup * (2 * terms - 1)), target(kGroup * terms), offset(kGroup),
              c(kGroup * terms);
          for (int64_t group = first; group < last; ++group) {
            const int64_t s0 = group * kGroupSeries;
            const int64_t live = std::min(kGroupSeries, series - s0);
            // dead lanes fit y = 0 on x = 0 (N = 1): zeros stay zeros, nothing overflows
            for (int64_t slot = 0; slot < kGroupSeries; ++slot) {
              const int g = static_cast<int>(slot / kLanes), lane = static_cast<int>(slot % kLanes);
              const bool alive = slot < live;
              const int64_t s = s0 + slot;
              const double* ps = power_data + (shared_x ? 0 : s * (2 * terms - 1));
              const double count = alive ? ps[0] : 1.0;
              for (int64_t p = 0; p < 2 * terms - 1; ++p) {
                moments[g * (2 * terms - 1) + p][lane] = alive ? ps[p] / count : (p == 0 ? 1.0 : 0.0);
              }
              for (int64_t k = 0; k < terms; ++k) {
                target[g * terms + k][lane] = alive ? cross_data[s * terms + k] / count : 0.0;
                c[g * terms + k][lane] = alive ? c_data[s * terms + k] : 0.0;
              }
              offset[g][lane] = alive ? square_data[s] / count : 0.0;
            }
            fit_group(moments.data(), target.data(), offset.data(), c.data(), s0, live);
            for (int64_t slot = 0; slot < live; ++slot) {
              for (int64_t k = 0; k < terms; ++k) {
                c_data[(s0 + slot) * terms + k] = c[(slot / kLanes) * terms + k][slot % kLanes];
              }
            }
          }
        });
      };
      if constexpr (kDeg != kDynamicDegree) {
        if (shared_x && steps >= kJump) {  // one A: jumps, their maps computed once
          std::vector<double> shared_moments(2 * terms - 1);
          for (int64_t p = 0; p < 2 * terms - 1; ++p) shared_moments[p] = power_data[p] / power_data[0];
          const JumpMaps<kDeg> maps(shared_moments.data(), lr);
          if (maps.finite()) {
            fit_in_groups(std::integral_constant<int, 1>{}, [&](const LaneVector* moments, const LaneVector* target,
                                                                const LaneVector* offset, LaneVector* c, int64_t s0,
                                                                int64_t live) {
              fit_lanes_with_jumps<kDeg, scalar_t>(maps, moments, target, offset, lr, steps, record_every, c,
                                                   trace_data + s0 * records, records, live, finite_data + s0);
            });
            return;
          }
        }
      }
      fit_in_groups(std::integral_constant<int, 4>{}, [&](const LaneVector* moments, const LaneVector* target,
                                                          const LaneVector* offset, LaneVector* c, int64_t s0,
                                                          int64_t live) {
        int64_t until_record = 1, next_record = 0;  // from step 0, which is recorded
        fit_lanes<kDeg, 4, scalar_t>(moments, target, offset, degree, lr, steps, record_every, until_record,
                                     next_record, c, trace_data + s0 * records, records, live, finite_data + s0);
      });
    });
  });
  at::Tensor coeffs = c64.to(coeffs_in.scalar_type());
  // the coefficients as returned (a finite float64 iterate can overflow float32): (D+1) checks per series
  AT_DISPATCH_FLOATING_TYPES(coeffs.scalar_type(), "fit_poly_moments_checked_cpu", [&] {
    const scalar_t* coeffs_data = coeffs.const_data_ptr<scalar_t>();
    const scalar_t* trace_data = trace.const_data_ptr<scalar_t>();
    double* bound_data = last_loss_bound.mutable_data_ptr<double>();
    for (int64_t s = 0; s < series; ++s) {
      const scalar_t* fitted = coeffs_data + s * terms;
      finite_data[s] = finite_data[s] && all_finite(fitted, terms);
      if (records > 0) {
        bound_data[s] = loss_bound(power_data + (shared_x ? 0 : s * (2 * terms - 1)), square_data[s], fitted, terms,
                                   static_cast<double>(trace_data[s * records + records - 1]));
      }
    }
  });
  return {coeffs, trace, finite, last_loss_bound};
}

std::tuple<at::Tensor, at::Tensor> fit_poly_moments_cpu(const at::Tensor& power_sums, const at::Tensor& cross_sums,
                                                        const at::Tensor& square_sum, const at::Tensor& coeffs,
                                                        double lr, int64_t steps, int64_t record_every) {
  auto [fitted, trace, finite, last_loss_bound] =
      fit_poly_moments_checked_cpu(power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every);
  return {fitted, trace};
}

}  // namespace

TORCH_LIBRARY_IMPL(pykernels, CPU, m) {
  m.impl("poly_moments", &poly_moments_cpu);
  m.impl("fit_poly_moments", &fit_poly_moments_cpu);
  m.impl("_fit_poly_moments_checked", &fit_poly_moments_checked_cpu);
}

}  // namespace pykernels
