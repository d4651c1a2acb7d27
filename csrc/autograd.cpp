// Autograd kernels of pykernels' ops, registered on the Autograd dispatch key for both op families: the compiled
// kernels (pykernels::<op>) and the numba kernels (pykernels::numba_<op>).
//
// They are written the way torch's generated autograd kernels are (a graph node per call, saved variables,
// forward-mode tangents), not as torch::autograd::Function: torch.func refuses C++ Functions, but transforms these
// like any built-in op. Every derivative, reverse or forward mode, is written by hand in terms of the ops
// themselves, called through the dispatcher, so each derivative is differentiable in turn (to any order). With
// p(x) = sum_k c_k x^k, p_w the polynomial with coefficients w, and N = x.numel():
//
//   poly(x, c) = p(x)                        x-bar = y-bar p'(x);  c-bar_k = sum y-bar x^k  (= poly_backward)
//   poly_backward(g, x, c) = (g p'(x), sum_i g x^k):  for cotangents (u, w) of its outputs
//       g-bar = u p'(x) + p_w(x);  x-bar = g (u p''(x) + p_w'(x));  c-bar_k = k sum u g x^(k-1)
//   poly_mse(x, y, c) = (L, G), r = p(x) - y, L = 1/N sum r^2, G_k = 2/N sum r x^k:  for cotangents (l, h),
//       s = 2/N (l r + p_h(x));  y-bar = -s;  x-bar = s p'(x) + 2/N r p_h'(x);  c-bar_k = sum s x^k
//       (with h = 0, c-bar = l G: the forward pass's own gradient, reused)
//   dot(a, b):  a-bar = g b, b-bar = g a;   dot_backward(g, a, b) = (g b, g a):  g-bar = u.b + v.a, a-bar = g v, ...
//
// The forward-mode tangents are the same formulas' transposes (see each kernel). A Python autograd node would cost
// ~15 us per call on the seed's 100-point problem, several times the fused kernel; these cost ~1 us, and nothing
// at all when no graph is recorded and no tangent is attached.
//
// The ops that have no derivative (the fits, the moments, the in-place training steps and the sampler) get one boxed
// kernel that follows torch's rules for them: outputs of a differentiated call raise when backpropagated through,
// forward-mode AD raises at once, an in-place write to a leaf that requires grad is refused, the written tensors'
// history is rebased and their version counters bumped (on the ADInplaceOrView key), so a graph that saved them sees
// the write.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <array>
#include <string>
#include <utility>
#include <vector>

#include "compat.h"
#include "op_handles.h"

namespace pykernels {
namespace {

using torch::autograd::collect_next_edges;
using torch::autograd::compute_requires_grad;
using torch::autograd::isFwGradDefined;
using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::set_history;
using torch::autograd::variable_list;

// acc += term; an undefined tensor is a zero that was never materialized.
void accumulate(at::Tensor& acc, const at::Tensor& term) {
  if (term.defined()) acc = acc.defined() ? acc + term : term;
}

// 2/N t, N = x.numel() (symbolic under torch.compile with dynamic shapes).
at::Tensor scaled_by_two_over_n(const at::Tensor& t, const at::Tensor& x) {
  return t.mul(2.0).div(c10::Scalar(x.sym_numel()));
}

// The coefficients of p' for those of p: (1 c_1, 2 c_2, ..., D c_D); undefined for D = 0 (p' = 0).
at::Tensor derivative_coeffs(const at::Tensor& coeffs) {
  const c10::SymInt degree = coeffs.sym_size(0) - 1;
  if (degree == 0) return {};
  return coeffs.narrow_symint(0, 1, degree) * at::arange(1, c10::Scalar(coeffs.sym_size(0)), coeffs.options());
}

// (0, 1 S_0, 2 S_1, ..., D S_(D-1)) with S_k = sum_i weights_i x_i^k: the x-derivatives of the power sums
// sum_i weights_i x_i^k, each weighted by the x-direction already folded into `weights`.
at::Tensor shifted_power_sums(const OpFamily& ops, const at::Tensor& weights, const at::Tensor& x,
                              const at::Tensor& coeffs) {
  const c10::SymInt degree = coeffs.sym_size(0) - 1;
  if (degree == 0) return at::zeros_like(coeffs);
  const at::Tensor sums = std::get<1>(ops.poly_backward(weights, x, coeffs)).narrow_symint(0, 0, degree);
  return at::constant_pad_nd(sums * at::arange(1, c10::Scalar(coeffs.sym_size(0)), coeffs.options()), {1, 0});
}

// g (u p''(x) + p_w'(x)) for an x-shaped u and coefficients w, either undefined (zero): the x-derivative of
// u p'(x) + p_w(x), scaled by g. Undefined when it is zero.
at::Tensor second_order_term(const OpFamily& ops, const at::Tensor& g, const at::Tensor& x, const at::Tensor& coeffs,
                             const at::Tensor& u, const at::Tensor& w) {
  at::Tensor sum;
  if (u.defined()) {
    const at::Tensor second = derivative_coeffs(coeffs);
    if (second.defined()) accumulate(sum, std::get<0>(ops.poly_backward(u, x, second)));
  }
  if (w.defined()) {
    const at::Tensor w_prime = derivative_coeffs(w);
    if (w_prime.defined()) accumulate(sum, ops.poly(x, w_prime));
  }
  return sum.defined() ? g * sum : sum;
}

// A tensor's primal value and forward-mode tangent (undefined: zero), read as torch's generated kernels read them:
// tangents are computed from primals, so they carry no tangent of their own. A tangent comes in the primal's dtype
// (torch.func can hand a float64 tangent to a float32 0-d tensor; torch's own formulas promote, the ops check).
struct Dual {
  explicit Dual(const at::Tensor& t) : primal(t._fw_primal(0)), tangent(t._fw_grad(0)) {
    if (tangent.defined() && tangent.scalar_type() != primal.scalar_type()) {
      tangent = tangent.to(primal.scalar_type());
    }
  }
  at::Tensor primal, tangent;
};

void set_tangent(const at::Tensor& output, const at::Tensor& tangent) {
  output._set_fw_grad(tangent.defined() ? tangent : at::zeros_like(output), 0, /*is_inplace_op=*/false);
}

// Base of the graph nodes: the op family whose ops the derivatives are written in, and the op's inputs, saved.
template <size_t kInputs>
struct PykernelsNode : Node {
  explicit PykernelsNode(const OpFamily& ops) : ops(ops) {}
  void release_variables() override {
    for (SavedVariable& input : inputs) input.reset_data();
  }
  at::Tensor input(size_t i) const { return inputs[i].unpack(); }

  const OpFamily& ops;
  std::array<SavedVariable, kInputs> inputs;
};

// The node of one call of an op, or none where no graph is recorded (grad mode off, or no input requires grad):
// building one costs about 1 us, a third of a small op's call.
template <typename NodeT, typename... Inputs>
compat::NodePtr<NodeT> record(const OpFamily& ops, const Inputs&... inputs) {
  if (!compute_requires_grad(inputs...)) return {};
  auto node = compat::make_node<NodeT>(ops);
  node->set_next_edges(collect_next_edges(inputs...));
  node->inputs = {SavedVariable(inputs, false)...};
  return node;
}

template <typename... Inputs>
bool any_tangent(const Inputs&... inputs) {
  return (isFwGradDefined(inputs) || ...);
}

template <typename Compute>
auto below_autograd(Compute compute) {
  at::AutoDispatchBelowADInplaceOrView below;
  return compute();
}

// --- poly: y = p(x) --------------------------------------------------------------------------------------------

struct PolyBackward final : PykernelsNode<2> {  // inputs: x, coeffs
  using PykernelsNode::PykernelsNode;
  std::string name() const override { return "PykernelsPolyBackward"; }

  variable_list apply(variable_list&& grads) override {
    variable_list result(2);
    const at::Tensor& grad_y = grads[0];
    if (!grad_y.defined()) return result;
    auto [grad_x, grad_coeffs] = ops.poly_backward(grad_y, input(0), input(1));
    if (should_compute_output(0)) result[0] = std::move(grad_x);
    if (should_compute_output(1)) result[1] = std::move(grad_coeffs);
    return result;
  }
};

template <Family family>
at::Tensor poly_autograd(const at::Tensor& x, const at::Tensor& coeffs) {
  const OpFamily& ops = OpFamily::get(family);
  const auto node = record<PolyBackward>(ops, x, coeffs);
  at::Tensor y = below_autograd([&] { return ops.poly(x, coeffs); });
  if (node) set_history(y, node);
  if (any_tangent(x, coeffs)) {
    const Dual dx(x), dc(coeffs);  // y-dot = x-dot p'(x) + p_(c-dot)(x)
    at::Tensor tangent;
    if (dx.tangent.defined()) accumulate(tangent, std::get<0>(ops.poly_backward(dx.tangent, dx.primal, dc.primal)));
    if (dc.tangent.defined()) accumulate(tangent, ops.poly(dx.primal, dc.tangent));
    set_tangent(y, tangent);
  }
  return y;
}

// --- poly_backward: (g p'(x), sum_i g x^k) -----------------------------------------------------------------------

struct PolyBackwardBackward final : PykernelsNode<3> {  // inputs: grad_y, x, coeffs
  using PykernelsNode::PykernelsNode;
  std::string name() const override { return "PykernelsPolyBackwardBackward"; }

  variable_list apply(variable_list&& grads) override {
    variable_list result(3);
    const at::Tensor &u = grads[0], &w = grads[1];  // cotangents of grad_x and grad_coeffs
    if (!u.defined() && !w.defined()) return result;
    const at::Tensor g = input(0), x_ = input(1), c = input(2);
    if (should_compute_output(0)) {  // u p'(x) + p_w(x)
      if (u.defined()) accumulate(result[0], std::get<0>(ops.poly_backward(u, x_, c)));
      if (w.defined()) accumulate(result[0], ops.poly(x_, w));
    }
    if (should_compute_output(1)) result[1] = second_order_term(ops, g, x_, c, u, w);
    if (should_compute_output(2) && u.defined()) result[2] = shifted_power_sums(ops, u * g, x_, c);
    return result;
  }
};

template <Family family>
TensorPair poly_backward_autograd(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& coeffs) {
  const OpFamily& ops = OpFamily::get(family);
  const auto node = record<PolyBackwardBackward>(ops, grad_y, x, coeffs);
  auto [grad_x, grad_coeffs] = below_autograd([&] { return ops.poly_backward(grad_y, x, coeffs); });
  if (node) set_history(std::vector<at::Tensor>{grad_x, grad_coeffs}, node);
  if (any_tangent(grad_y, x, coeffs)) {
    // (g p'(x))-dot = g-dot p'(x) + g (x-dot p''(x) + p_(c-dot)'(x));
    // (sum g x^k)-dot = sum g-dot x^k + k sum g x-dot x^(k-1)
    const Dual dg(grad_y), dx(x), dc(coeffs);
    at::Tensor grad_x_tangent, grad_coeffs_tangent;
    if (dg.tangent.defined()) {
      auto [a, b] = ops.poly_backward(dg.tangent, dx.primal, dc.primal);
      accumulate(grad_x_tangent, a);
      accumulate(grad_coeffs_tangent, b);
    }
    accumulate(grad_x_tangent, second_order_term(ops, dg.primal, dx.primal, dc.primal, dx.tangent, dc.tangent));
    if (dx.tangent.defined()) {
      accumulate(grad_coeffs_tangent, shifted_power_sums(ops, dg.primal * dx.tangent, dx.primal, dc.primal));
    }
    set_tangent(grad_x, grad_x_tangent);
    set_tangent(grad_coeffs, grad_coeffs_tangent);
  }
  return {grad_x, grad_coeffs};
}

// --- poly_mse: (L, G) = (mean r^2, 2/N sum r x^k), r = p(x) - y ---------------------------------------------------

struct PolyMSEBackward final : PykernelsNode<3> {  // inputs: x, y, coeffs; and the output grad_coeffs
  using PykernelsNode::PykernelsNode;
  std::string name() const override { return "PykernelsPolyMseBackward"; }
  void release_variables() override {
    PykernelsNode::release_variables();
    grad_coeffs.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    variable_list result(3);
    const at::Tensor &l = grads[0], &h = grads[1];  // cotangents of the loss and of grad_coeffs
    if (!l.defined() && !h.defined()) return result;
    const bool needs_x = should_compute_output(0), needs_y = should_compute_output(1);
    const bool needs_coeffs = should_compute_output(2);
    if (!needs_x && !needs_y) {
      // Only the coefficients: l G is the forward pass's own gradient (no pass over the data); a cotangent of G
      // adds the Hessian-vector product 2/N sum_i p_h(x_i) x_i^k.
      if (!needs_coeffs) return result;
      if (l.defined()) result[2] = grad_coeffs.unpack(getptr()) * l;
      if (h.defined()) {
        const at::Tensor x_ = input(0), c = input(2);
        accumulate(result[2], std::get<1>(ops.poly_backward(scaled_by_two_over_n(ops.poly(x_, h), x_), x_, c)));
      }
      return result;
    }
    const at::Tensor x_ = input(0), y_ = input(1), c = input(2);
    const at::Tensor residual = ops.poly(x_, c) - y_;
    at::Tensor s;  // 2/N (l r + p_h(x))
    if (l.defined()) s = residual * l;
    if (h.defined()) accumulate(s, ops.poly(x_, h));
    s = scaled_by_two_over_n(s, x_);
    auto [grad_x, grad_c] = ops.poly_backward(s, x_, c);
    if (needs_x) {
      if (h.defined()) {
        const at::Tensor h_prime = derivative_coeffs(h);
        if (h_prime.defined()) grad_x = grad_x + scaled_by_two_over_n(residual, x_) * ops.poly(x_, h_prime);
      }
      result[0] = std::move(grad_x);
    }
    if (needs_y) result[1] = -s;
    if (needs_coeffs) result[2] = std::move(grad_c);
    return result;
  }

  SavedVariable grad_coeffs;
};

template <Family family>
TensorPair poly_mse_autograd(const at::Tensor& x, const at::Tensor& y, const at::Tensor& coeffs) {
  const OpFamily& ops = OpFamily::get(family);
  // Saved variables are unpacked only by the branches that need them: a first-order coefficient gradient reads
  // none but grad_coeffs, so updating coeffs in place before backward is still fine there.
  const auto node = record<PolyMSEBackward>(ops, x, y, coeffs);
  auto [loss, grad_coeffs] = below_autograd([&] { return ops.poly_mse(x, y, coeffs); });
  if (node) set_history(std::vector<at::Tensor>{loss, grad_coeffs}, node);
  if (any_tangent(x, y, coeffs)) {
    // r-dot = x-dot p'(x) + p_(c-dot)(x) - y-dot;  L-dot = 2/N sum r r-dot;
    // G_k-dot = 2/N (sum r-dot x^k + k sum r x-dot x^(k-1))
    const Dual dx(x), dy(y), dc(coeffs);
    at::Tensor residual_tangent;
    if (dx.tangent.defined()) {
      accumulate(residual_tangent, std::get<0>(ops.poly_backward(dx.tangent, dx.primal, dc.primal)));
    }
    if (dc.tangent.defined()) accumulate(residual_tangent, ops.poly(dx.primal, dc.tangent));
    if (dy.tangent.defined()) accumulate(residual_tangent, -dy.tangent);
    const at::Tensor residual = ops.poly(dx.primal, dc.primal) - dy.primal;
    set_tangent(loss, scaled_by_two_over_n((residual * residual_tangent).sum(), dx.primal));
    at::Tensor grad_coeffs_tangent =
        std::get<1>(ops.poly_backward(scaled_by_two_over_n(residual_tangent, dx.primal), dx.primal, dc.primal));
    if (dx.tangent.defined()) {
      accumulate(grad_coeffs_tangent,
                 shifted_power_sums(ops, scaled_by_two_over_n(residual * dx.tangent, dx.primal), dx.primal,
                                    dc.primal));
    }
    set_tangent(grad_coeffs, grad_coeffs_tangent);
  }
  // Saved after its tangent is set: the saved copy keeps it, so forward-over-reverse (a Hessian by forward-mode
  // outer Jacobian) differentiates the reused gradient too.
  if (node) node->grad_coeffs = SavedVariable(grad_coeffs, true);
  return {loss, grad_coeffs};
}

// --- dot: sum_i a_i b_i ----------------------------------------------------------------------------------------

struct DotBackward final : PykernelsNode<2> {  // inputs: a, b
  using PykernelsNode::PykernelsNode;
  std::string name() const override { return "PykernelsDotBackward"; }

  variable_list apply(variable_list&& grads) override {
    variable_list result(2);
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return result;
    const bool needs_a = should_compute_output(0), needs_b = should_compute_output(1);
    if (needs_a && needs_b) {
      auto [grad_a, grad_b] = ops.dot_backward(grad, input(0), input(1));
      result[0] = std::move(grad_a);
      result[1] = std::move(grad_b);
    } else if (needs_a) {
      result[0] = grad * input(1);  // one side wanted (weights against fixed data): write one vector, not two
    } else if (needs_b) {
      result[1] = grad * input(0);
    }
    return result;
  }
};

template <Family family>
at::Tensor dot_autograd(const at::Tensor& a, const at::Tensor& b) {
  const OpFamily& ops = OpFamily::get(family);
  const auto node = record<DotBackward>(ops, a, b);
  at::Tensor result = below_autograd([&] { return ops.dot(a, b); });
  if (node) set_history(result, node);
  if (any_tangent(a, b)) {
    const Dual da(a), db(b);  // (a.b)-dot = a-dot.b + a.b-dot
    at::Tensor tangent;
    if (da.tangent.defined()) accumulate(tangent, ops.dot(da.tangent, db.primal));
    if (db.tangent.defined()) accumulate(tangent, ops.dot(da.primal, db.tangent));
    set_tangent(result, tangent);
  }
  return result;
}

// --- dot_backward: (g b, g a) ------------------------------------------------------------------------------------

struct DotBackwardBackward final : PykernelsNode<3> {  // inputs: grad, a, b
  using PykernelsNode::PykernelsNode;
  std::string name() const override { return "PykernelsDotBackwardBackward"; }

  variable_list apply(variable_list&& grads) override {
    variable_list result(3);
    const at::Tensor &u = grads[0], &v = grads[1];  // cotangents of grad_a = g b and grad_b = g a
    if (!u.defined() && !v.defined()) return result;
    const at::Tensor g = input(0), a_ = input(1), b_ = input(2);
    if (should_compute_output(0)) {  // u.b + v.a, shaped like g
      if (u.defined()) accumulate(result[0], ops.dot(u, b_));
      if (v.defined()) accumulate(result[0], ops.dot(v, a_));
      result[0] = result[0].reshape_symint(g.sym_sizes());
    }
    const at::Tensor scalar = g.reshape({});
    if (should_compute_output(1) && v.defined()) result[1] = scalar * v;
    if (should_compute_output(2) && u.defined()) result[2] = scalar * u;
    return result;
  }
};

template <Family family>
TensorPair dot_backward_autograd(const at::Tensor& grad, const at::Tensor& a, const at::Tensor& b) {
  const OpFamily& ops = OpFamily::get(family);
  const auto node = record<DotBackwardBackward>(ops, grad, a, b);
  auto [grad_a, grad_b] = below_autograd([&] { return ops.dot_backward(grad, a, b); });
  if (node) set_history(std::vector<at::Tensor>{grad_a, grad_b}, node);
  if (any_tangent(grad, a, b)) {
    const Dual dg(grad), da(a), db(b);  // (g b)-dot = g-dot b + g b-dot; (g a)-dot = g-dot a + g a-dot
    const at::Tensor g = dg.primal.reshape({});
    at::Tensor grad_a_tangent, grad_b_tangent;
    if (dg.tangent.defined()) {
      const at::Tensor g_dot = dg.tangent.reshape({});
      grad_a_tangent = g_dot * db.primal;
      grad_b_tangent = g_dot * da.primal;
    }
    if (db.tangent.defined()) accumulate(grad_a_tangent, g * db.tangent);
    if (da.tangent.defined()) accumulate(grad_b_tangent, g * da.tangent);
    set_tangent(grad_a, grad_a_tangent);
    set_tangent(grad_b, grad_b_tangent);
  }
  return {grad_a, grad_b};
}

// --- ops without a derivative ------------------------------------------------------------------------------------

std::string not_differentiable_message(const c10::OperatorHandle& op) {
  const std::string& name = op.schema().name();
  std::string why;
  if (compat::ends_with(name, "fit_poly") || compat::ends_with(name, "fit_poly_moments") ||
      compat::ends_with(name, "fit_poly_moments_checked")) {
    why = "it runs a whole gradient-descent loop in one kernel; differentiate poly_mse (or a loop of it) instead";
  } else if (compat::ends_with(name, "poly_moments")) {
    why = "it sums the fit's sufficient statistics in float64 for fit_poly_moments; differentiate poly_mse instead";
  } else if (compat::ends_with(name, "philox_normal_")) {
    why = "it fills `out` with random samples";
  } else {
    why = "it is a training step that updates w and b in place; run it under torch.no_grad(), on tensors that "
          "do not require grad";
  }
  // fit_poly(method="auto") calls the internal _fit_poly_moments_checked: named by the public op it computes
  const std::string shown = compat::ends_with(name, "_fit_poly_moments_checked") ? "pykernels::fit_poly_moments" : name;
  return shown + " is not differentiable: " + why;
}

// Tensors among the op's arguments on the stack (optional tensors that are None left out), with their indices.
std::vector<std::pair<size_t, at::Tensor>> tensor_arguments(const c10::OperatorHandle& op,
                                                            const torch::jit::Stack& stack) {
  const size_t num_arguments = op.schema().arguments().size();
  std::vector<std::pair<size_t, at::Tensor>> tensors;
  for (size_t i = 0; i < num_arguments; ++i) {
    const c10::IValue& value = stack[stack.size() - num_arguments + i];
    if (value.isTensor()) tensors.emplace_back(i, value.toTensor());
  }
  return tensors;
}

// The node of a differentiated call of such an op: backpropagating through it raises the op's message.
struct NotDifferentiable final : torch::autograd::Error {
  NotDifferentiable(const c10::OperatorHandle& op, torch::autograd::edge_list&& next_edges)
      : Error(not_differentiable_message(op), std::move(next_edges)), op_name(op.schema().name()) {}
  std::string name() const override { return op_name + " (not differentiable)"; }
  std::string op_name;
};

void not_differentiable_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const c10::FunctionSchema& schema = op.schema();
  const auto tensors = tensor_arguments(op, *stack);
  std::vector<at::Tensor> requiring_grad, written;
  for (const auto& [index, tensor] : tensors) {
    TORCH_CHECK_NOT_IMPLEMENTED(!isFwGradDefined(tensor), not_differentiable_message(op),
                                " (forward-mode AD was asked for)");
    if (at::GradMode::is_enabled() && tensor.requires_grad()) requiring_grad.push_back(tensor);
    if (schema.is_mutable({c10::SchemaArgType::input, index})) written.push_back(tensor);
  }
  for (const at::Tensor& tensor : written) torch::autograd::check_inplace(tensor, !requiring_grad.empty());
  {
    at::AutoDispatchBelowAutograd below;
    op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);  // through ADInplaceOrView: versions bump
  }
  if (requiring_grad.empty()) return;
  const auto make_node = [&] { return compat::make_node<NotDifferentiable>(op, collect_next_edges(requiring_grad)); };
  const auto returns_node = make_node();
  const size_t num_returns = schema.returns().size();
  for (size_t i = stack->size() - num_returns; i < stack->size(); ++i) {
    const c10::IValue& value = (*stack)[i];
    if (value.isTensor() && at::isFloatingType(value.toTensor().scalar_type())) {
      set_history(value.toTensor(), returns_node);
    }
  }
  // Each written tensor gets a node of its own: torch rebases a view's history onto output 0 of a node.
  for (const at::Tensor& tensor : written) torch::autograd::rebase_history(tensor, make_node());
}

// ADInplaceOrView kernel of the ops that write their arguments: the version counters of what they wrote move,
// as for torch's in-place ops, so autograd refuses a graph that saved the old values.
void bump_written_versions(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  std::vector<at::Tensor> written;
  for (const auto& [index, tensor] : tensor_arguments(op, *stack)) {
    if (op.schema().is_mutable({c10::SchemaArgType::input, index})) written.push_back(tensor);
  }
  {
    at::AutoDispatchBelowADInplaceOrView below;
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  }
  for (const at::Tensor& tensor : written) torch::autograd::increment_version(tensor);
}

template <Family family>
void register_differentiable(torch::Library& m, const std::string& prefix) {
  m.impl((prefix + "poly").c_str(), &poly_autograd<family>);
  m.impl((prefix + "poly_backward").c_str(), &poly_backward_autograd<family>);
  m.impl((prefix + "poly_mse").c_str(), &poly_mse_autograd<family>);
  m.impl((prefix + "dot").c_str(), &dot_autograd<family>);
  m.impl((prefix + "dot_backward").c_str(), &dot_backward_autograd<family>);
}

}  // namespace

TORCH_LIBRARY_IMPL(pykernels, Autograd, m) {
  register_differentiable<Family::cpp>(m, "");
  register_differentiable<Family::numba>(m, "numba_");
  for (const char* op : {"fit_poly", "numba_fit_poly", "poly_moments", "numba_poly_moments", "fit_poly_moments",
                         "numba_fit_poly_moments", "_fit_poly_moments_checked", "linear_sgd_step", "philox_normal_",
                         "linear_sgd_philox"}) {
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&not_differentiable_autograd>());
  }
}

TORCH_LIBRARY_IMPL(pykernels, ADInplaceOrView, m) {
  for (const char* op : {"linear_sgd_step", "philox_normal_", "linear_sgd_philox"}) {
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&bump_written_versions>());
  }
}

}  // namespace pykernels
