"""What a differentiable call costs on the write-up's 100 points, by registration route, for the same C++ kernel:

- ``cpp-autograd-kernel``: pykernels.poly_mse (the op's C++ Autograd-key kernel, the public route);
- ``autograd.Function``: pykernels.PolyMSE.apply (Python Function around the op);
- ``register_autograd``: the kernel behind a Python-registered op with torch.library.register_autograd and the
  Python derivatives of pykernels.PolyMSE (the route the numba ops took before they shared the C++ kernels);
- ``empty-autograd.Function``: a Function that does no work: the floor of any Python Function.
"""

from __future__ import annotations

import timeit

import torch

import pykernels
from pykernels import PolyMSE
from pykernels.study.polyfit import EmptyFunction

from .common import Benchmark, seed_problem, to_torch

_LIBRARY = None


def _register_autograd_route():
    """pykernels_bench::poly_mse: the compiled kernel as a Python-defined op with register_autograd."""
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("pykernels_bench", "DEF")
        _LIBRARY.define("poly_mse(Tensor x, Tensor y, Tensor coeffs) -> (Tensor loss, Tensor grad_coeffs)")
        kernel = torch.ops.pykernels.poly_mse.default

        def impl(x, y, coeffs):
            with torch._C._AutoDispatchBelowAutograd():
                return kernel(x, y, coeffs)

        _LIBRARY.impl("poly_mse", impl, "CPU")
        torch.library.register_autograd(
            "pykernels_bench::poly_mse",
            lambda ctx, grad_loss, grad_of_grad: PolyMSE.backward(ctx, grad_loss, grad_of_grad)[:3],
            setup_context=lambda ctx, inputs, output: PolyMSE.setup_context(ctx, (*inputs, "cpp"), output),
        )
    return torch.ops.pykernels_bench.poly_mse.default


ROUTES = {
    "cpp-autograd-kernel": lambda: pykernels.poly_mse,
    "autograd.Function": lambda: pykernels.PolyMSE.apply,
    "register_autograd": _register_autograd_route,
    "empty-autograd.Function": lambda: EmptyFunction.apply,
}


class AutogradRoute(Benchmark):
    params = [list(ROUTES)]
    param_names = ["route"]

    def setup(self, route):
        self.x, self.y = to_torch("cpu", *seed_problem())
        self.w = torch.zeros(5, requires_grad=True)
        self.fn = ROUTES[route]()
        self.time_forward_backward(route)

    def time_forward_backward(self, route):
        loss = self.fn(self.x, self.y, self.w)[0]
        self.w.grad = None
        loss.backward()

    def track_us_per_forward_backward(self, route):
        return min(timeit.repeat(lambda: self.time_forward_backward(route), number=2000, repeat=5)) / 2000 * 1e6

    track_us_per_forward_backward.unit = "µs"


class RatioToEmptyFunction(Benchmark):
    """PolyMSE.apply fwd+bwd over the empty Function's, measured back to back (goal: within 1.3x)."""

    unit = "x"

    def setup(self):
        self.routes = {name: AutogradRoute() for name in ("autograd.Function", "empty-autograd.Function")}
        for name, bench in self.routes.items():
            bench.setup(name)

    def track_ratio(self):
        times = {name: bench.track_us_per_forward_backward(name) for name, bench in self.routes.items()}
        return times["autograd.Function"] / times["empty-autograd.Function"]
