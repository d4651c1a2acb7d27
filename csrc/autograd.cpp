// Autograd kernels of the compiled ops, registered on the Autograd dispatch key.
//
// The math is the same as pykernels/autograd.py (which the numba ops and the Python autograd.Function classes
// use); it is kept in C++ as well because a Python autograd.Function costs ~15 us per call on the seed's
// 100-point problem, several times the fused kernel itself (measured in the study and in asv). Backward
// passes call the backward *ops* through the dispatcher and are once-differentiable, like the Python ones.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/library.h>

#include <initializer_list>
#include <memory>

#include "op_handles.h"

namespace pykernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Like Python's @once_differentiable, but stricter: gradients are computed without a graph, and whenever a graph
// was asked for (create_graph=True) they pass through a node that raises if they are differentiated again.
// (torch's decorator marks them only when the incoming gradients require grad, so a second derivative w.r.t. the
// inputs fails with an unrelated "does not require grad" message instead.)
variable_list once_differentiable(variable_list grad_inputs) {
  if (!at::GradMode::is_enabled()) return grad_inputs;
  for (auto& grad : grad_inputs) {
    if (grad.defined()) grad = grad.detach().requires_grad_(true);
  }
  auto error = std::make_shared<torch::autograd::DelayedError>(
      "pykernels: trying to differentiate twice; double backward is not supported (the backward passes are "
      "once-differentiable)",
      static_cast<int64_t>(grad_inputs.size()));
  return (*error)(std::move(grad_inputs));
}

struct PolyFunction : public torch::autograd::Function<PolyFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& coeffs) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({x, coeffs});
    return op_handles::poly(x, coeffs);
  }

  // grad_x = grad_y p'(x); grad_coeffs[k] = sum grad_y x^k.
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(2);
    {
      at::NoGradGuard no_grad;
      const auto saved = ctx->get_saved_variables();
      auto [grad_x, grad_coeffs] = op_handles::poly_backward(grad_outputs[0], saved[0], saved[1]);
      if (ctx->needs_input_grad(0)) grads[0] = std::move(grad_x);
      if (ctx->needs_input_grad(1)) grads[1] = std::move(grad_coeffs);
    }
    return once_differentiable(std::move(grads));
  }
};

struct PolyMSEFunction : public torch::autograd::Function<PolyMSEFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& y,
                               const at::Tensor& coeffs) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, grad_coeffs] = op_handles::poly_mse(x, y, coeffs);
    ctx->mark_non_differentiable({grad_coeffs});
    // The coefficient gradient is already known; x and y are kept only if their gradients will be derived.
    if (x.requires_grad() || y.requires_grad()) {
      ctx->save_for_backward({grad_coeffs, x, y, coeffs});
    } else {
      ctx->save_for_backward({grad_coeffs});
    }
    return {loss, grad_coeffs};
  }

  // d/d coeffs = grad_loss * grad_coeffs; with r = p(x) - y: d/dx = 2/N r p'(x), d/dy = -2/N r.
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(3);
    {
      at::NoGradGuard no_grad;
      const auto saved = ctx->get_saved_variables();
      const at::Tensor& grad_loss = grad_outputs[0];
      if (ctx->needs_input_grad(2)) grads[2] = saved[0] * grad_loss;
      if (ctx->needs_input_grad(0) || ctx->needs_input_grad(1)) {
        const at::Tensor &x = saved[1], &y = saved[2], &coeffs = saved[3];
        // sym_numel: under torch.compile with dynamic shapes N is symbolic
        const at::Tensor scaled_residual =
            (op_handles::poly(x, coeffs) - y).mul(grad_loss * 2.0).div(c10::Scalar(x.sym_numel()));
        if (ctx->needs_input_grad(0)) grads[0] = std::get<0>(op_handles::poly_backward(scaled_residual, x, coeffs));
        if (ctx->needs_input_grad(1)) grads[1] = -scaled_residual;
      }
    }
    return once_differentiable(std::move(grads));
  }
};

struct DotFunction : public torch::autograd::Function<DotFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({a, b});
    return op_handles::dot(a, b);
  }

  // grad_a = grad b; grad_b = grad a.
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(2);
    {
      at::NoGradGuard no_grad;
      const auto saved = ctx->get_saved_variables();
      const at::Tensor& grad = grad_outputs[0];
      const bool needs_a = ctx->needs_input_grad(0), needs_b = ctx->needs_input_grad(1);
      if (needs_a && needs_b) {
        std::tie(grads[0], grads[1]) = op_handles::dot_backward(grad, saved[0], saved[1]);
      } else if (needs_a) {
        grads[0] = grad * saved[1];  // one side wanted (weights against fixed data): write one vector, not two
      } else if (needs_b) {
        grads[1] = grad * saved[0];
      }
    }
    return once_differentiable(std::move(grads));
  }
};

// Without a graph to record (grad mode off, or no input requiring grad) the op goes straight to its kernel:
// building and discarding an autograd node costs about 1 us, a third of a small op's call.
bool records_graph(std::initializer_list<const at::Tensor*> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* input : inputs) {
    if (input->requires_grad()) return true;
  }
  return false;
}

at::Tensor poly_autograd(const at::Tensor& x, const at::Tensor& coeffs) {
  if (!records_graph({&x, &coeffs})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op_handles::poly(x, coeffs);
  }
  return PolyFunction::apply(x, coeffs);
}

std::tuple<at::Tensor, at::Tensor> poly_mse_autograd(const at::Tensor& x, const at::Tensor& y,
                                                     const at::Tensor& coeffs) {
  if (!records_graph({&x, &y, &coeffs})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op_handles::poly_mse(x, y, coeffs);
  }
  auto outputs = PolyMSEFunction::apply(x, y, coeffs);
  return {outputs[0], outputs[1]};
}

at::Tensor dot_autograd(const at::Tensor& a, const at::Tensor& b) {
  if (!records_graph({&a, &b})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op_handles::dot(a, b);
  }
  return DotFunction::apply(a, b);
}

}  // namespace

TORCH_LIBRARY_IMPL(pykernels, Autograd, m) {
  m.impl("poly", &poly_autograd);
  m.impl("poly_mse", &poly_mse_autograd);
  m.impl("dot", &dot_autograd);
}

}  // namespace pykernels
