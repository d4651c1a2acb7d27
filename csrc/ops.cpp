// The one place where pykernels' operators are declared. Backends (cpu/, cuda/, the numba kernels registered from
// Python) only register implementations for them; csrc/autograd.cpp registers their autograd kernels.
#include <Python.h>
#include <torch/library.h>

#include <string>

extern "C" {
// Importing pykernels._C runs the static TORCH_LIBRARY initializers below; the module itself is empty
// (no pybind11: ops are reached through torch.ops.pykernels, so one abi3 build serves every CPython).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "pykernels' compiled operators; use them through torch.ops.pykernels or the pykernels package.",
      -1,
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}

namespace {

// The ops every kernel backend implements: the compiled kernels as pykernels::<op>, the numba kernels as
// pykernels::numba_<op> from the same text (a dispatch key holds one kernel per op). Both families are declared
// here, at load, so a program exported with either resolves after a plain `import pykernels`.
constexpr const char* kBackendSchemas[] = {
    // y = p(x) = sum_k coeffs[k] x^k, elementwise, by Horner.
    "poly(Tensor x, Tensor coeffs) -> Tensor",
    // grad_x = grad_y * p'(x); grad_coeffs[k] = sum grad_y * x^k.
    "poly_backward(Tensor grad_y, Tensor x, Tensor coeffs) -> (Tensor grad_x, Tensor grad_coeffs)",
    // r = p(x) - y; loss = mean(r^2); grad_coeffs[k] = 2/N sum r x^k; one pass over the data.
    "poly_mse(Tensor x, Tensor y, Tensor coeffs) -> (Tensor loss, Tensor grad_coeffs)",
    // sum_i a_i b_i, accumulated in float64.
    "dot(Tensor a, Tensor b) -> Tensor",
    // grad_a = grad * b; grad_b = grad * a.
    "dot_backward(Tensor grad, Tensor a, Tensor b) -> (Tensor grad_a, Tensor grad_b)",
    // `steps` gradient-descent steps on poly_mse in one call: coeffs -= lr * grad_coeffs; trace[s / record_every]
    // is the loss at step s (before its update). y (N,) or (B, N) for B fits; x (N,) shared or like y; coeffs the
    // initial (D+1,) or (B, D+1). Not differentiable.
    "fit_poly(Tensor x, Tensor y, Tensor coeffs, float lr, int steps, int record_every) -> "
    "(Tensor coeffs, Tensor trace)",
    // The sufficient statistics of a polynomial least-squares fit, summed in float64 (x and y widened first):
    // power_sums[p] = sum_i x_i^p (p = 0..2D; power_sums[0] = N), cross_sums[k] = sum_i y_i x_i^k (k = 0..D),
    // square_sum = sum_i y_i^2. x (N,) or (B, N) gives power_sums (2D+1,) or (B, 2D+1); y (N,) or (B, N) gives
    // cross_sums (D+1,) or (B, D+1) and square_sum () or (B,). Sums over disjoint data add (all-reduce them).
    "poly_moments(Tensor x, Tensor y, int degree) -> (Tensor power_sums, Tensor cross_sums, Tensor square_sum)",
    // fit_poly's iterates from the sufficient statistics alone, in float64: with A[j][k] = power_sums[j + k] / N,
    // b = cross_sums / N, s = square_sum / N (N = power_sums[0]), every step is u = A c; loss = c.u - 2 c.b + s;
    // c -= 2 lr (u - b) -- the data pass's step in exact arithmetic, at (D+1)^2 work whatever N. coeffs gives the
    // initial values and the output dtype (float32 or float64); batched when cross_sums is (B, D+1), with
    // power_sums shared (2D+1,) or per series (B, 2D+1). Not differentiable.
    "fit_poly_moments(Tensor power_sums, Tensor cross_sums, Tensor square_sum, Tensor coeffs, float lr, int steps, "
    "int record_every) -> (Tensor coeffs, Tensor trace)",
};

}  // namespace

TORCH_LIBRARY(pykernels, m) {
  for (const char* prefix : {"", "numba_"}) {
    for (const char* schema : kBackendSchemas) m.def(torch::schema((std::string(prefix) + schema).c_str()));
  }
  // The compiled kernels only. fit_poly_moments, and per fit what fit_poly(method="auto") checks before it keeps a
  // fit on the statistics ((), or (B,) each): whether its coefficients and every recorded loss are finite (counted
  // as the kernel writes the trace, not in a pass over it), and pykernels._auto.loss_bound of its last loss (0
  // without one). CPU only; internal to pykernels.ops.
  m.def("_fit_poly_moments_checked(Tensor power_sums, Tensor cross_sums, Tensor square_sum, Tensor coeffs, float lr, "
        "int steps, int record_every) -> (Tensor coeffs, Tensor trace, Tensor finite, Tensor last_loss_bound)");
  // Seeds and streams are 64-bit Philox words, passed as int64 bit patterns.
  //
  // One SGD step of the linear model y_hat = dot(w, x) + b on the squared error, in place, fused:
  // e = dot(w, x) + b - y; w -= lr * 2 e x; b -= lr * 2 e. Two passes over x and w; returns e^2 (before the step).
  m.def("linear_sgd_step(Tensor(a!) w, Tensor(b!) b, Tensor x, Tensor y, float lr) -> Tensor");
  // out[i] = element i of the standard-normal sample (seed, stream) of common/philox.h (Philox4x32-10 and
  // Box-Muller): a pure function of (seed, stream, i), the same on every backend and thread count.
  m.def("philox_normal_(Tensor(a!) out, int seed, int stream) -> ()");
  // `epochs` epochs of the write-up's large problem, each on a fresh sample drawn in-kernel and never stored:
  // epoch e draws x = philox_normal(N, seed, first_epoch + e), y = target_weight sum(x) + target_bias, then
  // steps as linear_sgd_step. w, b updated in place; returns the (epochs,) squared errors e^2. Samples are
  // regenerated where needed, or with `buffer` (float32, like w) drawn once per epoch and kept there (the last
  // one is left in it).
  m.def("linear_sgd_philox(Tensor(a!) w, Tensor(b!) b, float lr, int epochs, int seed, int first_epoch, "
        "float target_weight, float target_bias, Tensor(c!)? buffer) -> Tensor");
}
