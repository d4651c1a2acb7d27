// CPU kernels of dot and dot_backward. dot accumulates in float64 lanes (memory-bound, so the widening is
// free) and combines chunks with compensated summation.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

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

at::Tensor dot_cpu(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_dot_inputs(a_in, b_in, /*allow_reduced=*/false);
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  at::Tensor result = at::empty({}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "dot_cpu", [&] {
    const scalar_t* a_data = a.const_data_ptr<scalar_t>();
    const scalar_t* b_data = b.const_data_ptr<scalar_t>();
    double total = 0.0;
    reduce_in_chunks(a.numel(), 1, &total, [&](int64_t begin, int64_t end, double* out) {
      dot_chunk(a_data, b_data, begin, end, out);
    });
    *result.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(total);
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
