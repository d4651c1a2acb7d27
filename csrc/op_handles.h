// Typed handles to one family of pykernels' ops through the dispatcher, so C++ code (the autograd kernels) calls
// the op for whatever device the tensors are on, never a backend's kernel directly. A call goes through the ops'
// own autograd kernels, so whatever a backward pass computes with them is differentiable in turn.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <string>
#include <tuple>

namespace pykernels {

using TensorPair = std::tuple<at::Tensor, at::Tensor>;

// The compiled ops are pykernels::<op>; the numba kernels implement the same schemas as pykernels::numba_<op>
// (a dispatch key holds one kernel per op).
enum class Family { cpp, numba };

class OpFamily {
 public:
  static const OpFamily& get(Family family);

  at::Tensor poly(const at::Tensor& x, const at::Tensor& coeffs) const { return poly_.call(x, coeffs); }
  TensorPair poly_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& coeffs) const {
    return poly_backward_.call(grad_y, x, coeffs);
  }
  TensorPair poly_mse(const at::Tensor& x, const at::Tensor& y, const at::Tensor& coeffs) const {
    return poly_mse_.call(x, y, coeffs);
  }
  at::Tensor dot(const at::Tensor& a, const at::Tensor& b) const { return dot_.call(a, b); }
  TensorPair dot_backward(const at::Tensor& grad, const at::Tensor& a, const at::Tensor& b) const {
    return dot_backward_.call(grad, a, b);
  }

 private:
  explicit OpFamily(const std::string& prefix)
      : poly_(find<at::Tensor(const at::Tensor&, const at::Tensor&)>(prefix + "poly")),
        poly_backward_(find<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
            prefix + "poly_backward")),
        poly_mse_(find<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(prefix + "poly_mse")),
        dot_(find<at::Tensor(const at::Tensor&, const at::Tensor&)>(prefix + "dot")),
        dot_backward_(find<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
            prefix + "dot_backward")) {}

  template <typename Signature>
  static c10::TypedOperatorHandle<Signature> find(const std::string& name) {
    return c10::Dispatcher::singleton().findSchemaOrThrow(("pykernels::" + name).c_str(), "").typed<Signature>();
  }

  c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, const at::Tensor&)> poly_;
  c10::TypedOperatorHandle<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&)> poly_backward_;
  c10::TypedOperatorHandle<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&)> poly_mse_;
  c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, const at::Tensor&)> dot_;
  c10::TypedOperatorHandle<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&)> dot_backward_;
};

inline const OpFamily& OpFamily::get(Family family) {
  static const OpFamily cpp("");
  static const OpFamily numba("numba_");
  return family == Family::cpp ? cpp : numba;
}

}  // namespace pykernels
