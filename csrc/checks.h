// Argument validation shared by the CPU and CUDA glue: every op checks its inputs here, before any kernel
// runs, with messages that name the argument and what was expected (the Python backends use the same text).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

namespace pykernels {

using NamedTensor = std::pair<const at::Tensor*, const char*>;

// "torch.float32", as Python prints a dtype, so messages read the same from every backend.
inline std::string dtype_name(at::ScalarType dtype) {
  return "torch." + std::string(c10::getDtypeNames(dtype).first);
}

// float32/float64 everywhere; CUDA also takes float16/bfloat16 (with float32 math).
inline void check_floating(const at::Tensor& t, const char* name, bool allow_reduced = false) {
  const auto dtype = t.scalar_type();
  const bool ok = dtype == at::kFloat || dtype == at::kDouble ||
                  (allow_reduced && (dtype == at::kHalf || dtype == at::kBFloat16));
  TORCH_CHECK_TYPE(ok, name, " must be a floating-point tensor (float32 or float64",
                   allow_reduced ? ", float16 or bfloat16" : "", "), got ", dtype_name(dtype));
}

inline void check_same_dtype_and_device(std::initializer_list<NamedTensor> tensors) {
  const NamedTensor& first = *tensors.begin();
  for (const NamedTensor& other : tensors) {
    TORCH_CHECK_TYPE(other.first->scalar_type() == first.first->scalar_type(), other.second,
                     " must have the same dtype as ", first.second, " (",
                     dtype_name(first.first->scalar_type()), "), got ", dtype_name(other.first->scalar_type()));
    TORCH_CHECK(other.first->device() == first.first->device(), other.second,
                " must be on the same device as ", first.second, " (", first.first->device(), "), got ",
                other.first->device());
  }
}

inline void check_not_empty(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.numel() > 0, name, " must not be empty, got shape ", t.sizes());
}

inline void check_coeffs(const at::Tensor& coeffs) {
  TORCH_CHECK_VALUE(coeffs.dim() == 1 && coeffs.numel() > 0,
                    "coeffs must be 1-D with at least one coefficient (degree + 1 entries), got shape ",
                    coeffs.sizes());
}

inline void check_same_shape(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), b_name, " must have the same shape as ", a_name, " ", a.sizes(),
                    ", got ", b.sizes());
}

inline void check_scalar(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.numel() == 1, name, " must hold a single value (0-d), got shape ", t.sizes());
}

// Inputs of poly and poly_backward: x (any shape, non-empty) and coeffs (D+1,).
inline void check_poly_inputs(const at::Tensor& x, const at::Tensor& coeffs, bool allow_reduced) {
  check_floating(x, "x", allow_reduced);
  check_same_dtype_and_device({{&x, "x"}, {&coeffs, "coeffs"}});
  check_coeffs(coeffs);
  check_not_empty(x, "x");
}

// Inputs of dot and dot_backward: a and b, 1-D of the same length.
inline void check_dot_inputs(const at::Tensor& a, const at::Tensor& b, bool allow_reduced) {
  check_floating(a, "a", allow_reduced);
  check_same_dtype_and_device({{&a, "a"}, {&b, "b"}});
  TORCH_CHECK_VALUE(a.dim() == 1, "a must be 1-D, got shape ", a.sizes());
  TORCH_CHECK_VALUE(b.dim() == 1, "b must be 1-D, got shape ", b.sizes());
  TORCH_CHECK_VALUE(a.numel() == b.numel(), "a and b must have the same length, got ", a.numel(), " and ",
                    b.numel());
  check_not_empty(a, "a");
}

// The data of a fit: y (N,) or (B, N), non-empty; x (N,) shared or y's shape; same dtype and device.
inline void check_fit_data(const at::Tensor& x, const at::Tensor& y) {
  check_floating(x, "x");
  check_same_dtype_and_device({{&x, "x"}, {&y, "y"}});
  TORCH_CHECK_VALUE(y.dim() == 1 || y.dim() == 2, "y must be 1-D (N,) or 2-D (B, N) for B fits, got shape ",
                    y.sizes());
  check_not_empty(y, "y");
  const int64_t n = y.size(-1);
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.dim() <= y.dim() && x.size(-1) == n && (x.dim() == 1 || x.sizes() == y.sizes()),
                    "x must have shape (N,) or the shape of y ", y.sizes(), ", got ", x.sizes());
}

// The number of recorded losses, ceil(steps / record_every), without overflowing for steps near 2^63.
inline int64_t fit_records(int64_t steps, int64_t record_every) {
  return steps / record_every + (steps % record_every != 0 ? 1 : 0);
}

inline void check_fit_steps(int64_t steps, int64_t record_every) {
  TORCH_CHECK_VALUE(steps >= 0, "steps must be >= 0, got ", steps);
  TORCH_CHECK_VALUE(record_every >= 1, "record_every must be >= 1, got ", record_every);
}

// fit_poly: x (N,) or like y, y (N,) or (B, N), coeffs (D+1,) or (B, D+1).
inline void check_fit_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& coeffs, int64_t steps,
                             int64_t record_every) {
  check_fit_data(x, y);
  check_same_dtype_and_device({{&x, "x"}, {&coeffs, "coeffs"}});
  TORCH_CHECK_VALUE(coeffs.dim() >= 1 && coeffs.size(-1) > 0 &&
                        (coeffs.dim() == 1 || (y.dim() == 2 && coeffs.dim() == 2 && coeffs.size(0) == y.size(0))),
                    "coeffs must be (D+1,) or (B, D+1) with B = y.shape[0], got ", coeffs.sizes());
  check_fit_steps(steps, record_every);
}

constexpr int64_t kMaxMomentsDegree = (int64_t{1} << 62) - 1;  // 2D + 1 sums must count in int64

// poly_moments: the data as for fit_poly, and 0 <= degree < 2^62.
inline void check_moments_inputs(const at::Tensor& x, const at::Tensor& y, int64_t degree) {
  check_fit_data(x, y);
  TORCH_CHECK_VALUE(degree >= 0 && degree <= kMaxMomentsDegree, "degree must be in [0, 2^62), got ", degree);
}

// fit_poly_moments: float64 sums shaped as poly_moments returns them for degree D = coeffs.size(-1) - 1, batched
// (B leading) when cross_sums is 2-D; coeffs (D+1,) or (B, D+1), float32 or float64, on the sums' device.
inline void check_fit_moments_inputs(const at::Tensor& power_sums, const at::Tensor& cross_sums,
                                     const at::Tensor& square_sum, const at::Tensor& coeffs, int64_t steps,
                                     int64_t record_every) {
  for (const NamedTensor& sums : {NamedTensor{&power_sums, "power_sums"}, NamedTensor{&cross_sums, "cross_sums"},
                                  NamedTensor{&square_sum, "square_sum"}}) {
    TORCH_CHECK_TYPE(sums.first->scalar_type() == at::kDouble, sums.second,
                     " must be a float64 tensor (as poly_moments returns it), got ",
                     dtype_name(sums.first->scalar_type()));
    TORCH_CHECK(sums.first->device() == coeffs.device(), sums.second, " must be on the same device as coeffs (",
                coeffs.device(), "), got ", sums.first->device());
  }
  check_floating(coeffs, "coeffs");
  TORCH_CHECK_VALUE(coeffs.dim() >= 1 && coeffs.dim() <= 2 && coeffs.size(-1) > 0,
                    "coeffs must be (D+1,) or (B, D+1), got ", coeffs.sizes());
  const int64_t terms = coeffs.size(-1);
  TORCH_CHECK_VALUE((cross_sums.dim() == 1 || cross_sums.dim() == 2) && cross_sums.size(-1) == terms,
                    "cross_sums must be (D+1,) or (B, D+1) with D+1 = coeffs.shape[-1] = ", terms, ", got ",
                    cross_sums.sizes());
  const bool batched = cross_sums.dim() == 2;
  const int64_t series = batched ? cross_sums.size(0) : 1;
  TORCH_CHECK_VALUE(coeffs.dim() == 1 || (batched && coeffs.size(0) == series),
                    "coeffs must be (D+1,) or (B, D+1) with B = cross_sums.shape[0], got ", coeffs.sizes());
  TORCH_CHECK_VALUE((power_sums.dim() == 1 || (batched && power_sums.dim() == 2 && power_sums.size(0) == series)) &&
                        power_sums.size(-1) == 2 * terms - 1,
                    "power_sums must be (2D+1,) or (B, 2D+1) with 2D+1 = ", 2 * terms - 1, ", got ",
                    power_sums.sizes());
  TORCH_CHECK_VALUE(batched ? square_sum.dim() == 1 && square_sum.size(0) == series : square_sum.dim() == 0,
                    "square_sum must be ", batched ? "(B,) with B = cross_sums.shape[0]" : "0-d", ", got shape ",
                    square_sum.sizes());
  check_fit_steps(steps, record_every);
}

// A seed is any 64-bit Philox key, passed through the schema's int64 as its bit pattern (Python's wrappers take
// [0, 2^64)); streams are counters in [0, 2^63).
inline void check_philox_stream(int64_t stream, const char* name) {
  TORCH_CHECK_VALUE(stream >= 0, name, " must be in [0, 2^63), got ", stream);
}

// The bytes [first, last) a tensor's elements can occupy.
inline std::pair<uintptr_t, uintptr_t> memory_span(const at::Tensor& t) {
  int64_t extent = 1;
  for (int64_t d = 0; d < t.dim(); ++d) extent += (t.size(d) - 1) * t.stride(d);
  const auto first = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  return {first, first + static_cast<uintptr_t>(extent) * t.element_size()};
}

// A tensor an op writes must not share memory with its other arguments: the kernels read and write them in the
// same passes, so an alias would change the result. Compared by address, not by storage: two tensors made from one
// NumPy array have storages of their own over the same memory. (The written tensors are contiguous, so their span
// holds nothing else: overlapping spans share elements, but for a strided `other` that steps over all of them.)
inline void check_no_overlap(const at::Tensor& written, const char* written_name, const at::Tensor& other,
                             const char* other_name) {
  if (written.numel() == 0 || other.numel() == 0 || written.device() != other.device()) return;
  const auto [first, last] = memory_span(written);
  const auto [other_first, other_last] = memory_span(other);
  TORCH_CHECK_VALUE(last <= other_first || other_last <= first, written_name, " and ", other_name,
                    " must not share memory (", written_name, " is written in place; pass a clone of one of them)");
}

inline void check_philox_normal_inputs(const at::Tensor& out, int64_t stream) {
  TORCH_CHECK_TYPE(out.scalar_type() == at::kFloat, "out must be a float32 tensor, got ",
                   dtype_name(out.scalar_type()));
  TORCH_CHECK_VALUE(out.dim() == 1, "out must be 1-D, got shape ", out.sizes());
  TORCH_CHECK_VALUE(out.is_contiguous(), "out must be contiguous (it is written in place), got strides ",
                    out.strides());
  check_philox_stream(stream, "stream");
}

// linear_sgd_step: w (N,) and b (one value) updated in place, x like w, y one value; nothing written overlaps.
inline void check_linear_sgd_step_inputs(const at::Tensor& w, const at::Tensor& b, const at::Tensor& x,
                                         const at::Tensor& y) {
  check_floating(w, "w");
  check_same_dtype_and_device({{&w, "w"}, {&x, "x"}, {&b, "b"}, {&y, "y"}});
  TORCH_CHECK_VALUE(w.dim() == 1, "w must be 1-D, got shape ", w.sizes());
  check_not_empty(w, "w");
  check_same_shape(w, "w", x, "x");
  check_scalar(b, "b");
  check_scalar(y, "y");
  TORCH_CHECK_VALUE(w.is_contiguous() && b.is_contiguous(), "w and b must be contiguous (they are updated in place)");
  check_no_overlap(w, "w", b, "b");
  check_no_overlap(w, "w", x, "x");
  check_no_overlap(w, "w", y, "y");
  check_no_overlap(b, "b", x, "x");
  check_no_overlap(b, "b", y, "y");
}

// linear_sgd_philox: w (N,) and b (one value) updated in place; the sample buffer, if given, float32 like w.
inline void check_linear_sgd_philox_inputs(const at::Tensor& w, const at::Tensor& b, int64_t epochs,
                                           int64_t first_epoch, const std::optional<at::Tensor>& buffer) {
  check_floating(w, "w");
  check_same_dtype_and_device({{&w, "w"}, {&b, "b"}});
  TORCH_CHECK_VALUE(w.dim() == 1, "w must be 1-D, got shape ", w.sizes());
  check_not_empty(w, "w");
  check_scalar(b, "b");
  TORCH_CHECK_VALUE(w.is_contiguous() && b.is_contiguous(), "w and b must be contiguous (they are updated in place)");
  TORCH_CHECK_VALUE(epochs >= 1, "epochs must be >= 1, got ", epochs);
  check_philox_stream(first_epoch, "first_epoch");
  TORCH_CHECK_VALUE(epochs - 1 <= std::numeric_limits<int64_t>::max() - first_epoch,
                    "the last stream, first_epoch + epochs - 1, must be below 2^63, got first_epoch = ", first_epoch,
                    " and epochs = ", epochs);
  check_no_overlap(w, "w", b, "b");
  if (buffer.has_value()) {
    TORCH_CHECK_TYPE(buffer->scalar_type() == at::kFloat, "buffer must be a float32 tensor, got ",
                     dtype_name(buffer->scalar_type()));
    TORCH_CHECK(buffer->device() == w.device(), "buffer must be on the same device as w (", w.device(), "), got ",
                buffer->device());
    TORCH_CHECK_VALUE(buffer->sizes() == w.sizes(), "buffer must have the shape of w ", w.sizes(), ", got ",
                      buffer->sizes());
    TORCH_CHECK_VALUE(buffer->is_contiguous(), "buffer must be contiguous (it is written in place), got strides ",
                      buffer->strides());
    check_no_overlap(*buffer, "buffer", w, "w");
    check_no_overlap(*buffer, "buffer", b, "b");
  }
}

}  // namespace pykernels
