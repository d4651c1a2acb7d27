// CUDA glue of poly_moments and fit_poly_moments (conventions as in poly_cuda.cu: checks first, device guard,
// torch's current stream, every launch checked, no host synchronization).
//
// poly_moments: one launch of partial sums (a grid of blocks per row: blockIdx.x over the data, blockIdx.y over the
// rows), then finish_moments_kernel adds the blocks' partials in order. Degrees 0..kMaxUnrolledDegree run
// moments_partials_kernel (one pass, every sum in registers; the power sums and the cross sums in one pass when x
// has a row per series, in two launches when x is shared by a batch of y); higher degrees run
// moments_chunked_partials_kernel (16 powers per pass, the running products kept in a float64 work buffer).
// fit_poly_moments: one thread per series, the whole step loop in one kernel (registers for degrees
// 0..kMaxUnrolledDegree, a float64 work buffer for the others).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "launch.h"
#include "moments_kernels.cuh"

namespace pykernels {
namespace {

using cuda_detail::kThreads;

constexpr int64_t kMaxGridY = 65535;  // rows beyond it stride (blockIdx.y loops)
// float64 partials per launch (128 MiB), unless one block per row needs more
constexpr int64_t kMaxPartials = int64_t{1} << 24;

// Blocks per row for `rows` rows of n elements with num_sums sums each: the whole grid about grid_blocks' size
// (8 per SM), at least one per row, no more than the data needs, and the partials bounded.
int64_t moments_blocks_per_row(int64_t n, int64_t rows, int64_t num_sums) {
  const int64_t grid = 8 * static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  const int64_t target = (grid + rows - 1) / rows;
  const int64_t needed = (n + kThreads - 1) / kThreads;
  const int64_t bounded = std::max<int64_t>(1, kMaxPartials / std::max<int64_t>(1, rows * num_sums));
  return std::max<int64_t>(1, std::min({target, needed, bounded}));
}

// Threads per block for `count` independent items: whole warps, at most max_threads.
int block_threads(int64_t count, int max_threads) {
  return count >= max_threads ? max_threads : finish_threads(count);
}

dim3 rows_grid(int64_t blocks_per_row, int64_t rows) {
  return dim3(static_cast<unsigned>(blocks_per_row), static_cast<unsigned>(std::min(rows, kMaxGridY)));
}

// The partials of one launch (rows, blocks, power_count + cross_count + square) added into the outputs.
void finish_moments(const at::Tensor& partials, int64_t rows, int64_t blocks, int64_t power_count,
                    int64_t cross_count, bool square, double* power_out, double* cross_out, double* square_out,
                    cudaStream_t stream) {
  const int64_t num_sums = power_count + cross_count + (square ? 1 : 0);
  const int threads = block_threads(num_sums, kThreads);
  const int64_t sum_blocks = std::min<int64_t>((num_sums + threads - 1) / threads, kMaxGridY);
  const dim3 grid = rows_grid(sum_blocks, rows);
  cuda_detail::finish_moments_kernel<<<grid, threads, 0, stream>>>(
      partials.const_data_ptr<double>(), rows, blocks, power_count, cross_count, square, power_out, cross_out,
      square_out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::vector<int64_t> with_last(at::IntArrayRef batch, int64_t last) {
  std::vector<int64_t> shape(batch.begin(), batch.end());
  shape.push_back(last);
  return shape;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> poly_moments_cuda(const at::Tensor& x_in, const at::Tensor& y_in,
                                                                 int64_t degree) {
  check_moments_inputs(x_in, y_in, degree);
  const c10::cuda::OptionalCUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = y_in.contiguous();
  const int64_t n = y.size(-1);
  const int64_t x_rows = x.dim() == 2 ? x.size(0) : 1;
  const int64_t y_rows = y.dim() == 2 ? y.size(0) : 1;
  const int64_t power_count = 2 * degree + 1;
  const int64_t cross_count = degree + 1;
  const auto wide = x.options().dtype(at::kDouble);
  at::Tensor power_sums = at::empty(with_last(x.sizes().slice(0, x.dim() - 1), power_count), wide);
  at::Tensor cross_sums = at::empty(with_last(y.sizes().slice(0, y.dim() - 1), cross_count), wide);
  at::Tensor square_sum = at::empty(y.sizes().slice(0, y.dim() - 1), wide);
  double* power_out = power_sums.mutable_data_ptr<double>();
  double* cross_out = cross_sums.mutable_data_ptr<double>();
  double* square_out = square_sum.mutable_data_ptr<double>();
  // x has a row per y row (x_rows == y_rows), or one row shared by all of y's (x_stride 0 for the cross sums)
  const bool fused = x_rows == y_rows;
  const int64_t x_stride = x.dim() == 2 ? n : 0;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "poly_moments_cuda", [&] {
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    const scalar_t* y_data = y.const_data_ptr<scalar_t>();
    dispatch_degree(degree, [&](auto kDegree) {
      constexpr int kDeg = decltype(kDegree)::value;
      if constexpr (kDeg == kDynamicDegree) {
        // powers of x (weight 1) over x's rows, then cross sums and square sums over y's rows; one work buffer of
        // running products, used by the two launches in stream order
        at::Tensor terms = at::empty({y_rows * n}, wide);
        const auto launch = [&](const scalar_t* weights, int64_t rows, int64_t count, bool square, double* p_out,
                                double* c_out, double* s_out) {
          const int64_t num_sums = count + (square ? 1 : 0);
          const int64_t blocks = moments_blocks_per_row(n, rows, num_sums);
          at::Tensor partials = at::empty({rows * blocks * num_sums}, wide);
          const dim3 grid = rows_grid(blocks, rows);
          cuda_detail::moments_chunked_partials_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
              x_data, x_stride, weights, n, rows, count, square, terms.mutable_data_ptr<double>(),
              partials.mutable_data_ptr<double>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          finish_moments(partials, rows, blocks, p_out != nullptr ? count : 0, c_out != nullptr ? count : 0, square,
                         p_out, c_out, s_out, stream);
        };
        launch(nullptr, x_rows, power_count, false, power_out, nullptr, nullptr);
        launch(y_data, y_rows, cross_count, true, nullptr, cross_out, square_out);
      } else {
        const auto launch = [&](auto kPowers, auto kCross, int64_t rows) {
          constexpr bool kP = decltype(kPowers)::value, kC = decltype(kCross)::value;
          const int64_t p_count = kP ? power_count : 0, c_count = kC ? cross_count : 0;
          const int64_t num_sums = p_count + c_count + (kC ? 1 : 0);
          const int64_t blocks = moments_blocks_per_row(n, rows, num_sums);
          at::Tensor partials = at::empty({rows * blocks * num_sums}, wide);
          const dim3 grid = rows_grid(blocks, rows);
          cuda_detail::moments_partials_kernel<kDeg, kP, kC, scalar_t><<<grid, kThreads, 0, stream>>>(
              x_data, x_stride, y_data, n, rows, partials.mutable_data_ptr<double>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          finish_moments(partials, rows, blocks, p_count, c_count, kC, power_out, cross_out, square_out, stream);
        };
        if (fused) {
          launch(std::true_type{}, std::true_type{}, y_rows);
        } else {
          launch(std::true_type{}, std::false_type{}, x_rows);
          launch(std::false_type{}, std::true_type{}, y_rows);
        }
      }
    });
  });
  return {power_sums, cross_sums, square_sum};
}

std::tuple<at::Tensor, at::Tensor> fit_poly_moments_cuda(const at::Tensor& power_sums_in,
                                                         const at::Tensor& cross_sums_in,
                                                         const at::Tensor& square_sum_in, const at::Tensor& coeffs_in,
                                                         double lr, int64_t steps, int64_t record_every) {
  check_fit_moments_inputs(power_sums_in, cross_sums_in, square_sum_in, coeffs_in, steps, record_every);
  const c10::cuda::OptionalCUDAGuard guard(coeffs_in.device());
  const bool batched = cross_sums_in.dim() == 2;
  const int64_t series = batched ? cross_sums_in.size(0) : 1;
  const int64_t terms = coeffs_in.size(-1);
  const int64_t degree = terms - 1;
  const int64_t records = fit_records(steps, record_every);
  const at::Tensor power_sums = power_sums_in.contiguous();
  const at::Tensor cross_sums = cross_sums_in.contiguous();
  const at::Tensor square_sum = square_sum_in.contiguous();
  const at::Tensor coeffs_start = coeffs_in.contiguous();
  at::Tensor coeffs = at::empty(batched ? at::IntArrayRef{series, terms} : at::IntArrayRef{terms},
                                coeffs_in.options());
  at::Tensor trace = at::empty(batched ? at::IntArrayRef{series, records} : at::IntArrayRef{records},
                               coeffs_in.options());
  if (series == 0) return {coeffs, trace};  // an empty batch: nothing to launch
  const int64_t power_stride = power_sums.dim() == 2 ? 2 * terms - 1 : 0;
  const int64_t coeffs_stride = coeffs_start.dim() == 2 ? terms : 0;
  const int threads = block_threads(series, 128);
  const int64_t blocks = std::min<int64_t>((series + threads - 1) / threads, int64_t{1} << 20);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(coeffs_in.scalar_type(), "fit_poly_moments_cuda", [&] {
    dispatch_degree(degree, [&](auto kDegree) {
      constexpr int kDeg = decltype(kDegree)::value;
      at::Tensor work;  // the runtime-degree kernel's state: moments, b, c, u per series
      if constexpr (kDeg == kDynamicDegree) {
        work = at::empty({(2 * terms - 1 + 3 * terms) * series}, coeffs_in.options().dtype(at::kDouble));
      }
      cuda_detail::fit_poly_moments_kernel<kDeg, scalar_t><<<blocks, threads, 0, stream>>>(
          power_sums.const_data_ptr<double>(), power_stride, cross_sums.const_data_ptr<double>(),
          square_sum.const_data_ptr<double>(), coeffs_start.const_data_ptr<scalar_t>(), coeffs_stride, degree, lr,
          steps, record_every, records, series, work.defined() ? work.mutable_data_ptr<double>() : nullptr,
          coeffs.mutable_data_ptr<scalar_t>(), trace.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {coeffs, trace};
}

}  // namespace

TORCH_LIBRARY_IMPL(pykernels, CUDA, m) {
  m.impl("poly_moments", &poly_moments_cuda);
  m.impl("fit_poly_moments", &fit_poly_moments_cuda);
}

}  // namespace pykernels
