// CUDA glue of the fused loops: fit_poly (one warp per series), philox_normal_ and linear_sgd_philox (two kernels
// per epoch, the epoch's scalars kept on the device). Conventions as in poly_cuda.cu: checks first, device guard,
// torch's current stream, every launch checked, no host synchronization.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../checks.h"
#include "fit_kernels.cuh"
#include "launch.h"

namespace pykernels {
namespace {

using cuda_detail::kThreads;

std::tuple<at::Tensor, at::Tensor> fit_poly_cuda(const at::Tensor& x_in, const at::Tensor& y_in,
                                                 const at::Tensor& coeffs_in, double lr, int64_t steps,
                                                 int64_t record_every) {
  check_fit_inputs(x_in, y_in, coeffs_in, steps, record_every);
  const int64_t degree = coeffs_in.size(-1) - 1;
  check_cuda_degree(degree);
  const c10::cuda::OptionalCUDAGuard guard(x_in.device());
  const bool batched = y_in.dim() == 2;
  const int64_t series = batched ? y_in.size(0) : 1;
  const int64_t n = y_in.size(-1);
  const int64_t records = fit_records(steps, record_every);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = y_in.contiguous();
  at::Tensor coeffs = (batched ? coeffs_in.expand({series, degree + 1}) : coeffs_in).contiguous().clone();
  at::Tensor trace = at::empty(batched ? at::IntArrayRef{series, records} : at::IntArrayRef{records}, x.options());
  const int64_t x_stride = x.dim() == 1 ? 0 : n;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fit_poly_cuda", [&] {
    dispatch_every_degree<cuda_detail::kMaxCudaDegree>(degree, [&](auto kDegree) {
      cuda_detail::fit_poly_kernel<decltype(kDegree)::value, scalar_t>
          <<<series, cuda_detail::kFitThreads, 0, stream>>>(
              x.const_data_ptr<scalar_t>(), x_stride, y.const_data_ptr<scalar_t>(), n, static_cast<scalar_t>(lr),
              steps, record_every, records, coeffs.mutable_data_ptr<scalar_t>(), trace.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {coeffs, trace};
}

// Threads: one per Philox counter (4 elements).
int64_t philox_blocks(int64_t n) {
  const int64_t counters = (n + philox::kBlockSize - 1) / philox::kBlockSize * philox::kBlockLanes;
  return grid_blocks(counters);
}

void philox_normal_cuda(at::Tensor& out, int64_t seed, int64_t sample) {
  check_philox_normal_inputs(out, sample);
  const c10::cuda::OptionalCUDAGuard guard(out.device());
  const int64_t n = out.numel();
  if (n == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cuda_detail::philox_normal_kernel<<<philox_blocks(n), kThreads, 0, stream>>>(out.mutable_data_ptr<float>(), n,
                                                                               static_cast<uint64_t>(seed), sample);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor linear_sgd_philox_cuda(at::Tensor& w, at::Tensor& b, double lr, int64_t epochs, int64_t seed,
                                  int64_t first_epoch, double target_weight, double target_bias,
                                  const std::optional<at::Tensor>& keep) {
  check_linear_sgd_philox_inputs(w, b, epochs, first_epoch, keep);
  const c10::cuda::OptionalCUDAGuard guard(w.device());
  const int64_t n = w.numel();
  const int64_t blocks = philox_blocks(n);
  at::Tensor losses = at::empty({epochs}, w.options());
  at::Tensor pending_step = at::zeros({}, w.options());
  at::Tensor partials = at::empty({2 * blocks}, w.options().dtype(at::kDouble));
  float* keep_data = keep.has_value() ? keep->mutable_data_ptr<float>() : nullptr;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "linear_sgd_philox_cuda", [&] {
    const cuda_detail::PhiloxEpochState<scalar_t> state{losses.mutable_data_ptr<scalar_t>(),
                                                        b.mutable_data_ptr<scalar_t>(),
                                                        pending_step.mutable_data_ptr<scalar_t>()};
    for (int64_t epoch = 0; epoch <= epochs; ++epoch) {  // the pass after the last applies its update only
      const int64_t sample = epoch < epochs ? first_epoch + epoch : -1;
      const int64_t previous = epoch > 0 ? first_epoch + epoch - 1 : -1;
      cuda_detail::linear_sgd_philox_pass_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
          w.mutable_data_ptr<scalar_t>(), n, static_cast<uint64_t>(seed), previous, sample,
          pending_step.const_data_ptr<scalar_t>(), keep_data, partials.mutable_data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (sample < 0) break;
      cuda_detail::linear_sgd_philox_finish_kernel<scalar_t><<<1, 32, 0, stream>>>(
          partials.const_data_ptr<double>(), blocks, epoch, lr, target_weight, target_bias, state);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return losses;
}

}  // namespace

TORCH_LIBRARY_IMPL(pykernels, CUDA, m) {
  m.impl("fit_poly", &fit_poly_cuda);
  m.impl("philox_normal_", &philox_normal_cuda);
  m.impl("linear_sgd_philox", &linear_sgd_philox_cuda);
}

}  // namespace pykernels
