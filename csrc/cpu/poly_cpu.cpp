// CPU kernels of poly, poly_backward and poly_mse. All math in float64 (inputs are widened on load), one
// pass over the data, degree unrolled at compile time for degrees <= kMaxUnrolledDegree. Products are rounded on
// their own (poly_math.h: kMayFuse). poly_mse of float64 data is computed to twice the working precision
// (compensated Horner, Dot2-style sums), so its loss and gradient are correctly rounded but for
// ill-conditioned data, like dot's.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>

#include "../checks.h"
#include "reduce_cpu.h"

namespace pykernels {
namespace {

template <int kDegree, typename scalar_t>
void poly_range(const scalar_t* x, const double* coeffs, int64_t degree, int64_t begin, int64_t end,
                scalar_t* y) {
  const int64_t deg = effective_degree<kDegree>(degree);
  for (int64_t i = begin; i < end; ++i) {
    y[i] = static_cast<scalar_t>(horner<kMayFuse<double, scalar_t>>(coeffs, deg, static_cast<double>(x[i])));
  }
}

// One chunk of poly_mse: out[0] = sum r^2, out[1 + k] = sum r x^k, with r = p(x) - y (float32 data: float64 math
// and sums, far more precise than the float32 result).
template <int kDegree, typename scalar_t>
void poly_mse_chunk(const scalar_t* x, const scalar_t* y, const double* coeffs, int64_t degree, int64_t begin,
                    int64_t end, double* out) {
  const int64_t deg = effective_degree<kDegree>(degree);
  LaneSums<kDegree == kDynamicDegree ? kDynamicDegree : kDegree + 2> lanes(deg + 2);
  LaneVector* sums = lanes.data();
  constexpr bool kFuse = kMayFuse<LaneVector, scalar_t>;
  const auto add_group = [&](const LaneVector& xs, const LaneVector& residual) {
    sums[0] += residual * residual;
    accumulate_powers(sums + 1, 1, deg, xs, residual);
  };
  const int64_t full_end = begin + (end - begin) / kLanes * kLanes;
  for (int64_t i = begin; i < full_end; i += kLanes) {
    const LaneVector xs = load_lanes(x + i);
    add_group(xs, horner<kFuse>(coeffs, deg, xs) - load_lanes(y + i));
  }
  if (full_end < end) {  // the partial group: its padding lanes' residuals are zeroed, whatever p(0) is
    const LaneVector xs = load_partial_lanes(x + full_end, end - full_end, 0.0);
    const LaneVector p = horner<kFuse>(coeffs, deg, xs);
    add_group(xs, zero_padding(p - load_partial_lanes(y + full_end, end - full_end, 0.0), end - full_end));
  }
  fold_lanes(sums, deg + 2, out);
}

// One chunk of poly_mse for float64 data, to twice the working precision: the residual r = hi + lo by compensated
// Horner and an exact subtraction, r x^k by exact products, then sum r^2 and sum r x^k as AccurateSums. out holds a
// (value, error) pair per sum.
template <int kDegree>
void poly_mse_chunk_accurate(const double* x, const double* y, const double* coeffs, int64_t degree, int64_t begin,
                             int64_t end, double* out) {
  const int64_t deg = effective_degree<kDegree>(degree);
  LaneSums<kDegree == kDynamicDegree ? kDynamicDegree : kDegree + 2, AccurateSum<LaneVector>> lanes(deg + 2);
  AccurateSum<LaneVector>* sums = lanes.data();
  for (int64_t i = begin; i < end; i += kLanes) {
    const int64_t count = std::min<int64_t>(kLanes, end - i);
    const LaneVector xs = load_group(x, i, end, 0.0);
    const Exact<LaneVector> p = compensated_horner(coeffs, deg, xs);
    const Exact<LaneVector> difference = two_sum(p.value, -load_group(y, i, end, 0.0));
    // renormalized, |lo| <= ulp(hi) / 2, even where the subtraction cancels (a fit that matches y to the last bit);
    // where the residual or its error is not finite, the residual alone, as the reference forms it
    const LaneVector low = difference.error + p.error;
    const Exact<LaneVector> residual = two_sum(difference.value, low);
    // (compensated Horner's error term can overflow on its own where Horner cancels: then the plain residual)
    const auto finite = ((difference.value - difference.value) == 0.0) & ((low - low) == 0.0);
    // the padding adds nothing, whatever p(0) is
    const LaneVector hi = zero_padding(finite ? residual.value : difference.value, count);
    const LaneVector lo = zero_padding(finite ? residual.error : splat<LaneVector>(0.0), count);
    sums[0].add_product(hi, hi);
    sums[0].error += splat<LaneVector>(2.0) * multiply(hi, lo);  // r^2 = hi^2 + 2 hi lo (+ lo^2, below the error)
    // r x^k as the reference forms it, a running product (so inf x^k is inf even where x^k underflows to 0)
    Exact<LaneVector> term{hi, lo};
    for (int64_t k = 0; k <= deg; ++k) {
      sums[1 + k].add(term.value, term.error);
      const Exact<LaneVector> next = two_product(term.value, xs);
      term = {next.value, next.error + multiply(term.error, xs)};
    }
  }
  fold_accurate_lanes(sums, deg + 2, out);
}

// One chunk of poly_backward: grad_x[i] = g_i p'(x_i) (written), out[k] = sum g x^k. derivative_coeffs: p''s.
template <int kDegree, typename scalar_t>
void poly_backward_chunk(const scalar_t* grad_y, const scalar_t* x, const double* derivative_coeffs,
                         int64_t degree, int64_t begin, int64_t end, scalar_t* grad_x, double* out) {
  const int64_t deg = effective_degree<kDegree>(degree);
  LaneSums<kDegree == kDynamicDegree ? kDynamicDegree : kDegree + 1> lanes(deg + 1);
  LaneVector* sums = lanes.data();
  for (int64_t i = begin; i < end; i += kLanes) {
    const LaneVector xs = load_group(x, i, end, 0.0);
    const LaneVector grads = load_group(grad_y, i, end, 0.0);  // padding lanes weigh 0
    const LaneVector grad_xs = grads * horner_derivative<kMayFuse<LaneVector, scalar_t>>(derivative_coeffs, deg, xs);
    for (int64_t lane = 0; lane < std::min<int64_t>(kLanes, end - i); ++lane) {
      grad_x[i + lane] = static_cast<scalar_t>(grad_xs[lane]);
    }
    accumulate_powers(sums, 1, deg, xs, grads);
  }
  fold_lanes(sums, deg + 1, out);
}

// loss = 1/n sum r^2, grad[k] = 2/n sum r x^k: to twice the working precision for float64 data.
template <typename scalar_t>
void poly_mse_into(const scalar_t* x_data, const scalar_t* y_data, const double* coeffs, int64_t degree, int64_t n,
                   scalar_t* loss, scalar_t* grad_data) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    WideCoeffs pairs(2 * (degree + 2));
    dispatch_degree(degree, [&](auto kDegree) {
      reduce_in_chunks<2>(n, degree + 2, pairs.data(), [&](int64_t begin, int64_t end, double* out) {
        poly_mse_chunk_accurate<decltype(kDegree)::value>(x_data, y_data, coeffs, degree, begin, end, out);
      });
    });
    *loss = accurate_mean(pairs[0], pairs[1], static_cast<double>(n));
    for (int64_t k = 0; k <= degree; ++k) {
      grad_data[k] = 2.0 * accurate_mean(pairs[2 + 2 * k], pairs[3 + 2 * k], static_cast<double>(n));
    }
  } else {
    WideCoeffs sums(degree + 2);
    dispatch_degree(degree, [&](auto kDegree) {
      reduce_in_chunks(n, degree + 2, sums.data(), [&](int64_t begin, int64_t end, double* out) {
        poly_mse_chunk<decltype(kDegree)::value>(x_data, y_data, coeffs, degree, begin, end, out);
      });
    });
    const double inv_n = 1.0 / static_cast<double>(n);
    *loss = static_cast<scalar_t>(sums[0] * inv_n);
    for (int64_t k = 0; k <= degree; ++k) grad_data[k] = static_cast<scalar_t>(2.0 * inv_n * sums[1 + k]);
  }
}

at::Tensor poly_cpu(const at::Tensor& x_in, const at::Tensor& coeffs_in) {
  check_poly_inputs(x_in, coeffs_in, /*allow_reduced=*/false);
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x);
  const int64_t n = x.numel();
  const int64_t degree = coeffs_in.numel() - 1;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "poly_cpu", [&] {
    const WideCoeffs coeffs = widen_coeffs<scalar_t>(coeffs_in.contiguous());
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    scalar_t* y_data = y.mutable_data_ptr<scalar_t>();
    dispatch_degree(degree, [&](auto kDegree) {
      at::parallel_for(0, n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
        poly_range<decltype(kDegree)::value>(x_data, coeffs.data(), degree, begin, end, y_data);
      });
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> poly_backward_cpu(const at::Tensor& grad_y_in, const at::Tensor& x_in,
                                                     const at::Tensor& coeffs_in) {
  check_poly_inputs(x_in, coeffs_in, /*allow_reduced=*/false);
  check_same_dtype_and_device({{&x_in, "x"}, {&grad_y_in, "grad_y"}});
  check_same_shape(x_in, "x", grad_y_in, "grad_y");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad_y = grad_y_in.contiguous();
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_coeffs = at::empty_like(coeffs_in, at::MemoryFormat::Contiguous);
  const int64_t degree = coeffs_in.numel() - 1;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "poly_backward_cpu", [&] {
    const WideCoeffs coeffs = widen_coeffs<scalar_t>(coeffs_in.contiguous());
    WideCoeffs derivative(degree);
    derivative_coeffs_of(coeffs.data(), degree, derivative.data());
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    const scalar_t* grad_y_data = grad_y.const_data_ptr<scalar_t>();
    scalar_t* grad_x_data = grad_x.mutable_data_ptr<scalar_t>();
    WideCoeffs sums(degree + 1);
    dispatch_degree(degree, [&](auto kDegree) {
      reduce_in_chunks(x.numel(), degree + 1, sums.data(), [&](int64_t begin, int64_t end, double* out) {
        poly_backward_chunk<decltype(kDegree)::value>(grad_y_data, x_data, derivative.data(), degree, begin, end,
                                                      grad_x_data, out);
      });
    });
    scalar_t* grad_coeffs_data = grad_coeffs.mutable_data_ptr<scalar_t>();
    for (int64_t k = 0; k <= degree; ++k) grad_coeffs_data[k] = static_cast<scalar_t>(sums[k]);
  });
  return {grad_x, grad_coeffs};
}

std::tuple<at::Tensor, at::Tensor> poly_mse_cpu(const at::Tensor& x_in, const at::Tensor& y_in,
                                                const at::Tensor& coeffs_in) {
  check_poly_inputs(x_in, coeffs_in, /*allow_reduced=*/false);
  check_same_dtype_and_device({{&x_in, "x"}, {&y_in, "y"}});
  check_same_shape(x_in, "x", y_in, "y");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = y_in.contiguous();
  const int64_t n = x.numel();
  const int64_t degree = coeffs_in.numel() - 1;
  at::Tensor loss = at::empty({}, x.options());
  at::Tensor grad_coeffs = at::empty_like(coeffs_in, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "poly_mse_cpu", [&] {
    const WideCoeffs coeffs = widen_coeffs<scalar_t>(coeffs_in.contiguous());
    poly_mse_into(x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), coeffs.data(), degree, n,
                  loss.mutable_data_ptr<scalar_t>(), grad_coeffs.mutable_data_ptr<scalar_t>());
  });
  return {loss, grad_coeffs};
}

}  // namespace

TORCH_LIBRARY_IMPL(pykernels, CPU, m) {
  m.impl("poly", &poly_cpu);
  m.impl("poly_backward", &poly_backward_cpu);
  m.impl("poly_mse", &poly_mse_cpu);
}

}  // namespace pykernels
