// CPU kernels of dot and dot_backward. dot accumulates in float64 lanes (memory-bound, so the widening is
// free) and combines chunks with compensated summation. Float32 products are exact in float64; float64 data is
// summed as Dot2 (Ogita, Rump and Oishi): exact products, sums carried to twice the precision, so the result is
// correctly rounded but for ill-conditioned data (error <= u |a.b| + n^2 u^2 |a|.|b|).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>
#include <type_traits>

#include "../checks.h"
#include "reduce_cpu.h"

namespace pykernels {
namespace {

template <typename scalar_t>
void dot_chunk(const scalar_t* a, const scalar_t* b, int64_t begin, int64_t end, double* out) {
  // Four independent accumulators hide the add latency: one multiply-add per element is all the work.
  constexpr int kUnroll = 4;
  LaneVector sums[kUnroll] = {};
  int64_t i = begin;
  for (; i + kUnroll * kLanes <= end; i += kUnroll * kLanes) {
    for (int u = 0; u < kUnroll; ++u) sums[u] += load_lanes(a + i + u * kLanes) * load_lanes(b + i + u * kLanes);
  }
  for (; i < end; i += kLanes) sums[0] += load_group(a, i, end, 0.0) * load_group(b, i, end, 0.0);
  const LaneVector total = (sums[0] + sums[1]) + (sums[2] + sums[3]);
  fold_lanes(&total, 1, out);
}

// Asks for the cache line of data[index] ahead of its use. A hint, which never faults, so an index past the end is
// harmless; the address is computed as an integer (a pointer past the end would be undefined behaviour).
inline void prefetch(const double* data, int64_t index) {
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(data) + index * sizeof(double)));
}

// dot_chunk of float64 data as Dot2: out = one (value, error) pair.
void dot_chunk_accurate(const double* a, const double* b, int64_t begin, int64_t end, double* out) {
  // Independent sums hide the two-sum chain's latency; each takes 4 registers without AVX-512 (16 of them).
#if defined(__AVX512F__)
  constexpr int kUnroll = 4;
#else
  constexpr int kUnroll = 2;
#endif
  AccurateSum<LaneVector> sums[kUnroll] = {};
  int64_t i = begin;
  constexpr int64_t kPrefetchAhead = 512;  // elements (4 KiB): Dot2's arithmetic leaves too few loads in flight
  for (; i + kUnroll * kLanes <= end; i += kUnroll * kLanes) {
    for (int line = 0; line < kUnroll * kLanes; line += 64 / sizeof(double)) {
      prefetch(a, i + kPrefetchAhead + line);
      prefetch(b, i + kPrefetchAhead + line);
    }
    for (int u = 0; u < kUnroll; ++u) sums[u].add_product(load_lanes(a + i + u * kLanes), load_lanes(b + i + u * kLanes));
  }
  for (; i < end; i += kLanes) sums[0].add_product(load_group(a, i, end, 0.0), load_group(b, i, end, 0.0));
  for (int u = 1; u < kUnroll; ++u) sums[0].add(sums[u].value, sums[u].error);
  fold_accurate_lanes(sums, 1, out);
}

// sum_i a_i b_i over n elements: Dot2 for float64 data, float64 lanes for float32 (its products are exact there).
template <typename scalar_t>
double dot_total(const scalar_t* a, const scalar_t* b, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    double pair[2];
    reduce_in_chunks<2>(n, 1, pair, [&](int64_t begin, int64_t end, double* out) {
      dot_chunk_accurate(a, b, begin, end, out);
    });
    return pair[0] + pair[1];
  } else {
    double total = 0.0;
    reduce_in_chunks(n, 1, &total, [&](int64_t begin, int64_t end, double* out) { dot_chunk(a, b, begin, end, out); });
    return total;
  }
}

at::Tensor dot_cpu(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_dot_inputs(a_in, b_in, /*allow_reduced=*/false);
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  at::Tensor result = at::empty({}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "dot_cpu", [&] {
    const scalar_t* a_data = a.const_data_ptr<scalar_t>();
    const scalar_t* b_data = b.const_data_ptr<scalar_t>();
    *result.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(dot_total(a_data, b_data, a.numel()));
  });
  return result;
}

std::tuple<at::Tensor, at::Tensor> dot_backward_cpu(const at::Tensor& grad, const at::Tensor& a_in,
                                                    const at::Tensor& b_in) {
  check_dot_inputs(a_in, b_in, /*allow_reduced=*/false);
  check_same_dtype_and_device({{&a_in, "a"}, {&grad, "grad"}});
  check_scalar(grad, "grad");
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  at::Tensor grad_a = at::empty_like(a);
  at::Tensor grad_b = at::empty_like(b);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "dot_backward_cpu", [&] {
    const scalar_t g = grad.item<scalar_t>();
    const scalar_t* a_data = a.const_data_ptr<scalar_t>();
    const scalar_t* b_data = b.const_data_ptr<scalar_t>();
    scalar_t* grad_a_data = grad_a.mutable_data_ptr<scalar_t>();
    scalar_t* grad_b_data = grad_b.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, a.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        grad_a_data[i] = g * b_data[i];
        grad_b_data[i] = g * a_data[i];
      }
    });
  });
  return {grad_a, grad_b};
}

at::Tensor linear_sgd_step_cpu(at::Tensor& w, at::Tensor& b, const at::Tensor& x, const at::Tensor& y,
                               double lr) {
  check_linear_sgd_step_inputs(w, b, x, y);
  const at::Tensor xc = x.contiguous();
  at::Tensor loss = at::empty({}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "linear_sgd_step_cpu", [&] {
    scalar_t* w_data = w.mutable_data_ptr<scalar_t>();
    const scalar_t* x_data = xc.const_data_ptr<scalar_t>();
    double dot = 0.0;  // pass 1: read w and x once
    reduce_in_chunks(w.numel(), 1, &dot, [&](int64_t begin, int64_t end, double* out) {
      dot_chunk(w_data, x_data, begin, end, out);
    });
    scalar_t* b_data = b.mutable_data_ptr<scalar_t>();
    const double error = dot + static_cast<double>(*b_data) - static_cast<double>(*y.const_data_ptr<scalar_t>());
    *loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(error * error);
    const scalar_t step = static_cast<scalar_t>(lr * 2.0 * error);
    at::parallel_for(0, w.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {  // pass 2: w -= step x
      for (int64_t i = begin; i < end; ++i) w_data[i] -= step * x_data[i];
    });
    *b_data -= step;
  });
  return loss;
}

}  // namespace

TORCH_LIBRARY_IMPL(pykernels, CPU, m) {
  m.impl("dot", &dot_cpu);
  m.impl("dot_backward", &dot_backward_cpu);
  m.impl("linear_sgd_step", &linear_sgd_step_cpu);
}

}  // namespace pykernels
