"""Gradients: gradcheck of every differentiable entry point for every subset of inputs requiring grad, the
hand-written backward's shortcut, and the seed polynomial fit trained through pykernels against the write-up's
autograd loop. (Higher orders and every other route: test_parity.py.)"""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import DEVICES, KERNEL_BACKENDS, Case, make_dot_inputs, make_poly_inputs
from torch.utils._python_dispatch import TorchDispatchMode

import pykernels
from pykernels import Dot, PolyForward, PolyMSE

# Each differentiable op is reachable two ways: the public function (the registered op, whose autograd is a C++
# kernel for "cpp" and "numba") and the autograd.Function class.
ENTRY_POINTS = {
    "poly": {
        "function": lambda backend: lambda x, c: pykernels.poly(x, c, backend=backend),
        "autograd.Function": lambda backend: lambda x, c: PolyForward.apply(x, c, backend),
    },
    "poly_mse": {
        "function": lambda backend: lambda x, y, c: pykernels.poly_mse(x, y, c, backend=backend).loss,
        "autograd.Function": lambda backend: lambda x, y, c: PolyMSE.apply(x, y, c, backend)[0],
    },
    "dot": {
        "function": lambda backend: lambda a, b: pykernels.dot(a, b, backend=backend),
        "autograd.Function": lambda backend: lambda a, b: Dot.apply(a, b, backend),
    },
}
ROUTES = ["function", "autograd.Function"]
GRAD_CASES = [Case("vector", (9,), 3), Case("seed_column", (6, 1), 4), Case("noncontiguous", (8,), 2, False)]

pytestmark = [
    pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "torch"]),
    pytest.mark.parametrize("route", ROUTES),
    pytest.mark.parametrize("device", DEVICES),
]


def _inputs(op, case, device):
    if op == "dot":
        return make_dot_inputs(case.shape[0], torch.float64, device)
    x, y, coeffs = make_poly_inputs(case, torch.float64, device)
    return (x, coeffs) if op == "poly" else (x, y, coeffs)


def _requires_grad_subsets(n):
    """Every non-empty subset of the inputs: each exercises its own needs_input_grad branch."""
    return [mask for mask in itertools.product([False, True], repeat=n) if any(mask)]


@pytest.mark.parametrize("op", list(ENTRY_POINTS))
@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_gradcheck(backend, route, device, op, case):
    fn = ENTRY_POINTS[op][route](backend)
    inputs = _inputs(op, case, device)
    for mask in _requires_grad_subsets(len(inputs)):
        args = [t.detach().clone().requires_grad_(m) for t, m in zip(inputs, mask, strict=True)]
        assert torch.autograd.gradcheck(fn, args), (op, mask)


def test_poly_mse_backward_reuses_the_forward_gradient(backend, route, device):
    """With only coeffs requiring grad, backward is one multiply: no polynomial op runs again."""
    x, y, coeffs = make_poly_inputs(GRAD_CASES[1], torch.float64, device)
    coeffs.requires_grad_(True)
    loss = ENTRY_POINTS["poly_mse"][route](backend)(x, y, coeffs)
    _, grad_coeffs = pykernels.get_backend(backend).poly_mse(x, y, coeffs.detach())

    class RecordOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with RecordOps() as recorder:
        (3.0 * loss).backward()
    torch.testing.assert_close(coeffs.grad, 3.0 * grad_coeffs.detach(), rtol=1e-14, atol=0)
    if backend != "torch":  # the reference differentiates its power matrix by autograd, by design
        assert not any("pykernels" in name for name in recorder.ops), recorder.ops
        assert not any("pow" in name or "mm" in name for name in recorder.ops), recorder.ops


def test_seed_fit_matches_the_write_ups_autograd_loop(backend, route, device):
    """x = linspace(0, 5, 100), y = sin x, degree 4, lr 1e-5, zeros init, float32, as in the write-up."""
    steps, lr = 3000, 1e-5
    x = torch.linspace(0, 5, 100, device=device).reshape(-1, 1)
    y = torch.sin(x)

    # the write-up's loop: power matrix, mm, autograd
    w_seed = torch.zeros((5, 1), device=device, requires_grad=True)
    exponents = torch.arange(0.0, 5, device=device)
    for _ in range(steps):
        mse = ((y - (x**exponents).mm(w_seed)) ** 2).mean()
        w_seed.grad = None
        mse.backward()
        with torch.no_grad():
            w_seed -= lr * w_seed.grad

    loss_fn = ENTRY_POINTS["poly_mse"][route](backend)
    w = torch.zeros(5, device=device, requires_grad=True)
    for _ in range(steps):
        loss = loss_fn(x, y, w)
        w.grad = None
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad

    # float32 trajectories: the fused kernel rounds differently from the power matrix, by ~1 ulp per step
    torch.testing.assert_close(w.detach(), w_seed.detach().reshape(-1), rtol=1e-4, atol=1e-7)
    assert loss.item() == pytest.approx(mse.item(), rel=1e-4)
