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
// losses of the steps between, quadratic forms in c_t (JumpTables), are computed off the chain, one step per SIMD
// lane. Batched fits are independent chains: SIMD across series, several vectors in flight.
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

// The jump tables of a fit of compile-time degree D. With c_{t+j} = M^j c_t + q_j (q_0 = 0, q_{j+1} = M q_j + d),
// the loss of step t + j is a quadratic form in c_t alone:
//
//   loss_{t+j} = c_t.Q_j c_t + r_j.c_t + k_j,   Q_j = P^T A P,  r_j = 2 P^T (A q_j - b),  k_j = q_j.(A q_j - 2 b) + s
//
// (P = M^j), so a block's 16 losses are 16 lanes of (D+1)(D+2)/2 + (D+1) multiply-adds from the products
// c_a c_b, and the iterates between block starts are never formed. quadratic[p][h] holds Q_j[a][b] (doubled off
// the diagonal) for the p-th pair a <= b and step j = 8 h + lane; jump and jump_offset are M^16 and q_16 for the
// chain.
template <int D>
struct JumpTables {
  static constexpr int kTerms = D + 1;
  static constexpr int kPairs = kTerms * (kTerms + 1) / 2;
  LaneVector quadratic[kPairs][kHalves];
  LaneVector linear[kTerms][kHalves];
  LaneVector constant[kHalves];
  double jump[kTerms][kTerms];
  double jump_offset[kTerms];
  // |c| at any step of a block from c_t is at most reach * |c_t| + drift (max norms), and |u - b| at most
  // gram_norm |c| + target_norm: while these products stay far below the float64 range, no intermediate of the
  // stepwise recurrence overflows (what the jumps would skip over). form_norm bounds the quadratic form's terms.
  double reach = 1.0, drift = 0.0, gram_norm = 0.0, target_norm = 0.0, form_norm = 0.0;

  JumpTables(const GramSystem& system, double lr) {
    double step_matrix[kTerms][kTerms], power[kTerms][kTerms], offset[kTerms];
    for (int a = 0; a < kTerms; ++a) {
      for (int b = 0; b < kTerms; ++b) {
        step_matrix[a][b] = (a == b ? 1.0 : 0.0) - 2.0 * lr * system.gram(a, b);
        power[a][b] = a == b ? 1.0 : 0.0;
      }
      offset[a] = 0.0;
    }
    for (int j = 0; j <= kJump; ++j) {
      if (j == kJump) {
        std::copy(&power[0][0], &power[0][0] + kTerms * kTerms, &jump[0][0]);
        std::copy(offset, offset + kTerms, jump_offset);
        break;
      }
      add_step_form(system, j, power, offset);
      for (int a = 0; a < kTerms; ++a) {
        double row = 0.0;
        for (int b = 0; b < kTerms; ++b) row += std::fabs(power[a][b]);
        reach = std::max(reach, row);
        drift = std::max(drift, std::fabs(offset[a]));
      }
      double next_power[kTerms][kTerms], next_offset[kTerms];
      for (int a = 0; a < kTerms; ++a) {
        next_offset[a] = 2.0 * lr * system.target[a];
        for (int k = 0; k < kTerms; ++k) next_offset[a] += step_matrix[a][k] * offset[k];
        for (int b = 0; b < kTerms; ++b) {
          double sum = 0.0;
          for (int k = 0; k < kTerms; ++k) sum += step_matrix[a][k] * power[k][b];
          next_power[a][b] = sum;
        }
      }
      std::copy(&next_power[0][0], &next_power[0][0] + kTerms * kTerms, &power[0][0]);
      std::copy(next_offset, next_offset + kTerms, offset);
    }
    for (int a = 0; a < kTerms; ++a) {
      double row = 0.0;
      for (int b = 0; b < kTerms; ++b) row += std::fabs(system.gram(a, b));
      gram_norm = std::max(gram_norm, row);
      target_norm = std::max(target_norm, std::fabs(system.target[a]));
    }
  }

  // Lane j of the tables: Q_j, r_j, k_j from P = M^j and q_j.
  void add_step_form(const GramSystem& system, int j, const double (&power)[kTerms][kTerms],
                     const double (&offset)[kTerms]) {
    const int half = j / kLanes, lane = j % kLanes;
    double gram_power[kTerms][kTerms], residual[kTerms];  // A P; A q - b
    for (int a = 0; a < kTerms; ++a) {
      residual[a] = -system.target[a];
      for (int k = 0; k < kTerms; ++k) residual[a] += system.gram(a, k) * offset[k];
      for (int b = 0; b < kTerms; ++b) {
        double sum = 0.0;
        for (int k = 0; k < kTerms; ++k) sum += system.gram(a, k) * power[k][b];
        gram_power[a][b] = sum;
      }
    }
    int pair = 0;
    for (int a = 0; a < kTerms; ++a) {
      for (int b = a; b < kTerms; ++b, ++pair) {
        double sum = 0.0;
        for (int k = 0; k < kTerms; ++k) sum += power[k][a] * gram_power[k][b];
        quadratic[pair][half][lane] = a == b ? sum : 2.0 * sum;
        form_norm = std::max(form_norm, std::fabs(quadratic[pair][half][lane]));
      }
      double sum = 0.0;
      for (int k = 0; k < kTerms; ++k) sum += power[k][a] * residual[k];
      linear[a][half][lane] = 2.0 * sum;
      form_norm = std::max(form_norm, std::fabs(linear[a][half][lane]));
    }
    double value = system.offset;
    for (int a = 0; a < kTerms; ++a) value += offset[a] * (residual[a] - system.target[a]);
    constant[half][lane] = value;
  }

  // Whether steps from coefficients of at most `largest` (max norm) can be jumped over: every intermediate value
  // of the stepwise loop (c, u - b, c.u, the update) and of the quadratic form stays below 1e300.
  bool safe(double largest) const {
    const double c_bound = reach * largest + drift;
    const double u_bound = gram_norm * c_bound + target_norm;
    const double form_bound = form_norm * (kPairs + kTerms) * (largest * largest + largest + 1.0);
    return c_bound * (u_bound + 1.0) < 1e300 && form_bound < 1e300;
  }
};

// `blocks` jumps of 16 steps from c, recording the losses of the steps the countdown marks. Returns false (c and
// trace then unspecified) when a coefficient or a recorded loss is not finite, or the coefficients grew to where a
// step of the stepwise loop could overflow: the caller redoes those steps one at a time, so that inf and NaN come
// out as the stepwise loop makes them. When it returns true, `stored_finite` says whether every written loss is
// finite in the trace's dtype (float32 can overflow where the float64 loss does not; the steps go on as they do).
template <int D, typename scalar_t>
bool fit_single_jumps(const JumpTables<D>& tables, int64_t blocks, int64_t record_every, int64_t& until_record,
                      double* c_io, scalar_t*& trace, bool& stored_finite) {
  constexpr int kTerms = D + 1;
  constexpr int kPairs = JumpTables<D>::kPairs;
  typedef scalar_t Stored __attribute__((vector_size(kLanes * sizeof(scalar_t))));
  double c[kTerms];
  std::copy(c_io, c_io + kTerms, c);
  LaneVector finite_losses = splat<LaneVector>(0.0);  // stays 0 while every recorded loss is finite (x - x = 0)
  Stored finite_stored = Stored{} + scalar_t(0);      // the same for the losses as written
  double largest = 0.0;  // max |c| at the blocks' starts (and the end)
  for (int64_t block = 0; block < blocks; ++block) {
#pragma GCC unroll 16
    for (int a = 0; a < kTerms; ++a) largest = std::max(largest, std::fabs(c[a]));
    if (until_record <= kJump) {  // a recorded step in this block: its 16 losses, lane per step
      double products[kPairs];
      int pair = 0;
#pragma GCC unroll 16
      for (int a = 0; a < kTerms; ++a) {
#pragma GCC unroll 16
        for (int b = a; b < kTerms; ++b) products[pair++] = c[a] * c[b];
      }
      LaneVector losses[kHalves];
#pragma GCC unroll 2
      for (int h = 0; h < kHalves; ++h) {
        LaneVector loss = tables.constant[h];
#pragma GCC unroll 16
        for (int a = 0; a < kTerms; ++a) loss += tables.linear[a][h] * c[a];
#pragma GCC unroll 64
        for (int p = 0; p < kPairs; ++p) loss += tables.quadratic[p][h] * products[p];
        losses[h] = loss;
      }
      if (record_every == 1) {  // every step recorded: whole vector stores
#pragma GCC unroll 2
        for (int h = 0; h < kHalves; ++h) {
          const Stored stored = __builtin_convertvector(losses[h], Stored);
          store_streaming(trace, stored);
          trace += kLanes;
          finite_losses += losses[h] - losses[h];
          finite_stored += stored - stored;
        }
      } else {
        for (int j = 0; j < kJump; ++j) {
          if (--until_record == 0) {
            const double loss = losses[j / kLanes][j % kLanes];
            const scalar_t stored = static_cast<scalar_t>(loss);
            *trace++ = stored;
            finite_losses[j % kLanes] += loss - loss;
            finite_stored[j % kLanes] += stored - stored;
            until_record = record_every;
          }
        }
      }
    } else {
      until_record -= kJump;
    }
    double next[kTerms];  // the chain: c_{t+16} = M^16 c_t + q_16
#pragma GCC unroll 16
    for (int a = 0; a < kTerms; ++a) {
      double sum = tables.jump_offset[a];
#pragma GCC unroll 16
      for (int b = 0; b < kTerms; ++b) sum += tables.jump[a][b] * c[b];
      next[a] = sum;
    }
    std::copy(next, next + kTerms, c);
  }
  std::copy(c, c + kTerms, c_io);
  for (int a = 0; a < kTerms; ++a) largest = std::max(largest, std::fabs(c[a]));
  bool ok = all_finite(c, kTerms) && tables.safe(largest);  // a NaN c stays NaN to the end: all_finite sees it
  for (int j = 0; j < kLanes; ++j) {
    ok = ok && finite_losses[j] == 0.0;
    stored_finite = stored_finite && finite_stored[j] == scalar_t(0);
  }
  return ok;
}

// A single fit: jumps of 16 steps in segments, each checked; a segment that ends with something not finite is redone
// one step at a time from its start, and so is every step after it. Degrees above kMaxUnrolledDegree, systems
// that are not finite and the last steps (fewer than 16) step one at a time. Returns whether every written loss
// is finite.
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
    if (finite_system && steps >= kJump) {
      const JumpTables<kDegree> tables(system, lr);
      const bool finite_tables = all_finite(&tables.jump[0][0], terms * terms) && all_finite(tables.jump_offset, terms);
      constexpr int64_t kSegmentBlocks = 256;
      std::vector<double> start(terms);
      while (finite_tables && steps - done >= kJump) {
        const int64_t blocks = std::min(kSegmentBlocks, (steps - done) / kJump);
        std::copy(c, c + terms, start.begin());
        const int64_t until_record_at_start = until_record;
        scalar_t* const trace_at_start = trace;
        bool segment_finite = true;
        if (!fit_single_jumps<kDegree>(tables, blocks, record_every, until_record, c, trace, segment_finite)) {
          std::copy(start.begin(), start.end(), c);
          until_record = until_record_at_start;
          trace = trace_at_start;
          break;
        }
        trace_finite = trace_finite && segment_finite;
        done += blocks * kJump;
      }
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
// kept for kPending records and then written row by row (a series' trace is a row of the (B, T) output).
// trace_finite[series] says whether every loss written to the series' row is finite.
//
// Steps run in segments of kSegment. A segment whose every intermediate is bounded far below the float64 range
// (from the coefficients at its start, the growth of a step, 1 + 2 lr |A|, and |b|, s) runs fused: multiply-adds
// as FMAs, about half the instructions. There no value can overflow, so the fused steps differ from the exact ones
// by rounding alone. Other segments (coefficients that may overflow, systems that are not finite) run exact:
// every product rounded on its own, in the reference's order, so inf and NaN come out as the reference's.
template <int kDegree, int kGroup, typename scalar_t>
void fit_lanes(const LaneVector* moments, const LaneVector* target, const LaneVector* offset, int64_t degree,
               double lr, int64_t steps, int64_t record_every, LaneVector* c, scalar_t* trace, int64_t records,
               int64_t live_series, bool* trace_finite) {
  typedef scalar_t Stored __attribute__((vector_size(kLanes * sizeof(scalar_t))));
  Stored finite_stored[kGroup];  // per lane 0 while every loss, as written, is finite (x - x = 0)
  for (int g = 0; g < kGroup; ++g) finite_stored[g] = Stored{} + scalar_t(0);
  constexpr int kPending = 8;
  constexpr int64_t kSegment = 64;
  const int64_t deg = effective_degree<kDegree>(degree);
  constexpr int kStorage = kDegree == kDynamicDegree ? 1 : kDegree + 1;
  std::vector<LaneVector> dynamic_u(kDegree == kDynamicDegree ? (deg + 1) * kGroup : 0);
  LaneVector pending[kPending][kGroup];
  int pending_count = 0;
  int64_t first_pending = 0;
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
  int64_t until_record = 1;
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
  for (int64_t series = 0; series < live_series; ++series) {
    trace_finite[series] = finite_stored[series / kLanes][series % kLanes] == scalar_t(0);
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
  at::Tensor finite = at::empty(batch, coeffs_in.options().dtype(at::kBool));
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
      constexpr int kGroup = 4;
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
          fit_lanes<kDeg, kGroup, scalar_t>(moments.data(), target.data(), offset.data(), degree, lr, steps,
                                            record_every, c.data(), trace_data + s0 * records, records, live,
                                            finite_data + s0);
          for (int64_t slot = 0; slot < live; ++slot) {
            for (int64_t k = 0; k < terms; ++k) c_data[(s0 + slot) * terms + k] = c[(slot / kLanes) * terms + k][slot % kLanes];
          }
        }
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
