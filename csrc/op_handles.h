// Typed handles to pykernels' ops through the dispatcher, so C++ code (the autograd kernels) calls the op
// for whatever device the tensors are on, never a backend's kernel directly.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <tuple>

namespace pykernels {
namespace op_handles {

template <typename Signature>
c10::TypedOperatorHandle<Signature> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using TensorPair = std::tuple<at::Tensor, at::Tensor>;

inline at::Tensor poly(const at::Tensor& x, const at::Tensor& coeffs) {
  static const auto op = find<at::Tensor(const at::Tensor&, const at::Tensor&)>("pykernels::poly");
  return op.call(x, coeffs);
}

inline TensorPair poly_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& coeffs) {
  static const auto op =
      find<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&)>("pykernels::poly_backward");
  return op.call(grad_y, x, coeffs);
}

inline TensorPair poly_mse(const at::Tensor& x, const at::Tensor& y, const at::Tensor& coeffs) {
  static const auto op =
      find<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&)>("pykernels::poly_mse");
  return op.call(x, y, coeffs);
}

inline at::Tensor dot(const at::Tensor& a, const at::Tensor& b) {
  static const auto op = find<at::Tensor(const at::Tensor&, const at::Tensor&)>("pykernels::dot");
  return op.call(a, b);
}

inline TensorPair dot_backward(const at::Tensor& grad, const at::Tensor& a, const at::Tensor& b) {
  static const auto op =
      find<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&)>("pykernels::dot_backward");
  return op.call(grad, a, b);
}

}  // namespace op_handles
}  // namespace pykernels
