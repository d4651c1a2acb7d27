"""torch.compile(fullgraph=True, dynamic=True) of training steps built on pykernels: one graph, no break, and
eager's numbers, with the backward compiled by AOTAutograd from the ops' autograd registrations."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES, KERNEL_BACKENDS

import pykernels
from pykernels import Dot, PolyMSE

LR = 1e-3


def poly_mse_loss(x, y, w, backend):
    return pykernels.poly_mse(x, y, w, backend=backend).loss


def poly_mse_function_loss(x, y, w, backend):
    return PolyMSE.apply(x, y, w, backend)[0]


def poly_forward_loss(x, y, w, backend):
    residual = pykernels.poly(x, w, backend=backend) - y
    return (residual * residual).mean()


def dot_loss(x, y, w, backend):
    return (pykernels.dot(w, x, backend=backend) - y.sum()) ** 2


def dot_function_loss(x, y, w, backend):
    return (Dot.apply(w, x, backend) - y.sum()) ** 2


def manual_poly_step(x, y, w, backend):
    """The whole gradient-descent step, no autograd: loss and gradient from one op, then the update."""
    loss, grad = pykernels.poly_mse(x, y, w, backend=backend)
    return loss, w - LR * grad


LOSSES = [poly_mse_loss, poly_mse_function_loss, poly_forward_loss, dot_loss, dot_function_loss]


def _data(n, num_weights, device):
    x = torch.linspace(0, 1, n, dtype=torch.float64, device=device)
    w = torch.linspace(0.1, 0.5, num_weights, dtype=torch.float64, device=device)
    return x, torch.sin(x), w


def _weights_for(loss_fn, n):
    return n if loss_fn in (dot_loss, dot_function_loss) else 5


def _assert_one_graph(fn, *args):
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_compiled_training_step_matches_eager(backend, device, loss_fn):
    x, y, w = _data(64, _weights_for(loss_fn, 64), device)
    _assert_one_graph(loss_fn, x, y, w.requires_grad_(), backend)
    torch._dynamo.reset()
    compiled = torch.compile(loss_fn, fullgraph=True, dynamic=True)
    for n in (64, 97):  # dynamic shapes: a second length reuses the graph
        x, y, w = _data(n, _weights_for(loss_fn, n), device)
        w_eager, w_compiled = w.clone().requires_grad_(), w.clone().requires_grad_()
        eager_loss = loss_fn(x, y, w_eager, backend)
        compiled_loss = compiled(x, y, w_compiled, backend)
        eager_loss.backward()
        compiled_loss.backward()
        torch.testing.assert_close(compiled_loss, eager_loss)
        torch.testing.assert_close(w_compiled.grad, w_eager.grad)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_manual_step_matches_eager(backend, device):
    x, y, w = _data(64, 5, device)
    _assert_one_graph(manual_poly_step, x, y, w, backend)
    compiled = torch.compile(manual_poly_step, fullgraph=True, dynamic=True)
    w_eager = w_compiled = w
    for _ in range(5):
        _, w_eager = manual_poly_step(x, y, w_eager, backend)
        _, w_compiled = compiled(x, y, w_compiled, backend)
    torch.testing.assert_close(w_compiled, w_eager)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_compiled_bad_input_raises_the_kernels_error(backend):
    torch._dynamo.reset()
    compiled = torch.compile(manual_poly_step, fullgraph=True)
    x = torch.ones(4, dtype=torch.float64)
    with pytest.raises(Exception, match="y must have the same shape as x"):
        compiled(x, torch.ones(5, dtype=torch.float64), torch.ones(3, dtype=torch.float64), backend)
