// Argument validation shared by the CPU and CUDA glue: every op checks its inputs here, before any kernel
// runs, with messages that name the argument and what was expected (the Python backends use the same text).
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>
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

}  // namespace pykernels
