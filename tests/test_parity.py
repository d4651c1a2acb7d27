"""Parity with torch on every route a user can reach: each op x backend x entry point x route against the plain-torch
reference (backend "torch", torch autograd of the definitions in pykernels.reference).

Differentiable ops (poly, poly_mse with both outputs, dot, and the raw backward ops poly_backward and
dot_backward) go through every autograd route, first and higher order: .backward, autograd.grad with
create_graph, autograd.functional, torch.func (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap, per-sample grads,
third order), torch.compile(fullgraph, dynamic) of a training step, torch.export with a serialization round trip,
and gradgradcheck / forward-mode gradcheck against finite differences. Every cell must give the reference's
numbers; none may raise. (The ops that are not differentiable are tested in test_inplace.py.)
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from conftest import KERNEL_BACKENDS

import pykernels
from pykernels import Dot, PolyForward, PolyMSE

func = torch.func
f64 = torch.float64


def _uniform(shape, seed, low=-1.2, high=1.2):
    return torch.empty(shape, dtype=f64).uniform_(low, high, generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class OpCase:
    """One op and input configuration: inputs(), and outputs(backend, *inputs) -> tuple of the op's outputs."""

    name: str
    inputs: Callable[[], tuple[torch.Tensor, ...]]
    outputs: Callable[..., tuple[torch.Tensor, ...]]

    def __str__(self) -> str:
        return self.name


def _poly(backend, x, c):
    return (pykernels.poly(x, c, backend=backend),)


def _poly_mse(backend, x, y, c):
    return tuple(pykernels.poly_mse(x, y, c, backend=backend))


def _dot(backend, a, b):
    return (pykernels.dot(a, b, backend=backend),)


def _raw(op):
    return lambda backend, *args: tuple(getattr(pykernels.get_backend(backend), op)(*args))


OPS = [
    OpCase("poly", lambda: (_uniform(6, 1), _uniform(4, 2)), _poly),
    OpCase("poly_degree0", lambda: (_uniform(5, 1), _uniform(1, 2)), _poly),
    OpCase("poly_mse", lambda: (_uniform(6, 1), _uniform(6, 3), _uniform(4, 2)), _poly_mse),
    OpCase("poly_mse_matrix", lambda: (_uniform((2, 3), 1), _uniform((2, 3), 3), _uniform(3, 2)), _poly_mse),
    OpCase("dot", lambda: (_uniform(5, 4), _uniform(5, 5)), _dot),
    OpCase("poly_backward", lambda: (_uniform(6, 3), _uniform(6, 1), _uniform(4, 2)), _raw("poly_backward")),
    OpCase("dot_backward", lambda: (_uniform((), 6), _uniform(5, 4), _uniform(5, 5)), _raw("dot_backward")),
]
# The autograd.Function classes are an entry point of their own for the ops they wrap.
FUNCTION_OPS = [
    OpCase("PolyForward", OPS[0].inputs, lambda backend, x, c: (PolyForward.apply(x, c, backend),)),
    OpCase("PolyMSE", OPS[2].inputs, lambda backend, x, y, c: tuple(PolyMSE.apply(x, y, c, backend))),
    OpCase("Dot", OPS[4].inputs, lambda backend, a, b: (Dot.apply(a, b, backend),)),
]


def _probe(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A scalar that depends nonlinearly on every output, so its derivatives of any order involve the op's own.
    (Weights without a random generator: the probe also runs under vmap and torch.compile.)"""
    total = outputs[0].new_zeros(())
    for i, out in enumerate(outputs):
        weights = torch.linspace(0.5 + 0.1 * i, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
        total = total + (torch.sin(out) * weights).sum() + 0.3 * (out * out * weights).sum()
    return total


def _scalar_fn(case: OpCase, backend: str):
    return lambda *inputs: _probe(case.outputs(backend, *inputs))


def _tangents(inputs, seed):
    return tuple(_uniform(t.shape, seed + i) for i, t in enumerate(inputs))


# --- the routes: (case, backend) -> a tensor or a nest of tensors --------------------------------------------------


def _grads(inputs):
    """The inputs' .grad, a zero where autograd found no path (the reference's degree-0 polynomial does not read
    x, so its graph has none; the ops' derivative there is an explicit zero, as a built-in op's would be)."""
    return [torch.zeros_like(t) if t.grad is None else t.grad for t in inputs]


def _grad(output, inputs, **kwargs):
    return torch.autograd.grad(output, inputs, allow_unused=True, materialize_grads=True, **kwargs)


def _backward(case, backend):
    inputs = [t.requires_grad_() for t in case.inputs()]
    _scalar_fn(case, backend)(*inputs).backward()
    return _grads(inputs)


def _grad_of_grad(case, backend):
    """autograd.grad(create_graph=True), then the gradient of <grad, v>: the Hessian-vector product."""
    inputs = [t.requires_grad_() for t in case.inputs()]
    grads = _grad(_scalar_fn(case, backend)(*inputs), inputs, create_graph=True)
    inner = sum((g * v).sum() for g, v in zip(grads, _tangents(inputs, 7), strict=True))
    return _grad(inner, inputs)


def _double_backward(case, backend):
    """.backward(create_graph=True), then .backward of a penalty built from the gradients (gradient penalty)."""
    inputs = [t.requires_grad_() for t in case.inputs()]
    _scalar_fn(case, backend)(*inputs).backward(create_graph=True)
    penalty = sum((g**2).sum() for g in _grads(inputs))
    first = [g.detach().clone() for g in _grads(inputs)]
    for t in inputs:
        t.grad = None
    penalty.backward()
    return first, _grads(inputs)


def _functional_hessian(case, backend):
    return torch.autograd.functional.hessian(_scalar_fn(case, backend), case.inputs())


def _functional_hvp(case, backend):
    inputs = case.inputs()
    return torch.autograd.functional.hvp(_scalar_fn(case, backend), inputs, _tangents(inputs, 7))


def _functional_hessian_forward(case, backend):
    """The Hessian by a forward-mode outer Jacobian: forward mode over the ops' reverse mode."""
    return torch.autograd.functional.hessian(
        _scalar_fn(case, backend), case.inputs(), vectorize=True, outer_jacobian_strategy="forward-mode"
    )


def _forward_over_reverse(case, backend):
    """Plain forward-mode AD over autograd.grad(create_graph=True): a Hessian-vector product without torch.func."""
    inputs = [t.requires_grad_() for t in case.inputs()]
    with torch.autograd.forward_ad.dual_level():
        duals = [torch.autograd.forward_ad.make_dual(t, v) for t, v in zip(inputs, _tangents(inputs, 7), strict=True)]
        grads = _grad(_scalar_fn(case, backend)(*duals), duals, create_graph=True)
        tangents = [torch.autograd.forward_ad.unpack_dual(g).tangent for g in grads]
        return [torch.zeros_like(g) if t is None else t for g, t in zip(grads, tangents, strict=True)]


def _functional_jacobian(case, backend):
    return torch.autograd.functional.jacobian(lambda *i: case.outputs(backend, *i), case.inputs())


def _argnums(case):
    return tuple(range(len(case.inputs())))


def _func_grad(case, backend):
    return func.grad(_scalar_fn(case, backend), argnums=_argnums(case))(*case.inputs())


def _func_vjp(case, backend):
    outputs, vjp_fn = func.vjp(lambda *i: case.outputs(backend, *i), *case.inputs())
    return outputs, vjp_fn(_tangents(outputs, 11))


def _func_jvp(case, backend):
    inputs = case.inputs()
    return func.jvp(lambda *i: case.outputs(backend, *i), inputs, _tangents(inputs, 13))


def _func_jacrev(case, backend):
    return func.jacrev(lambda *i: case.outputs(backend, *i), argnums=_argnums(case))(*case.inputs())


def _func_jacfwd(case, backend):
    return func.jacfwd(lambda *i: case.outputs(backend, *i), argnums=_argnums(case))(*case.inputs())


def _func_hessian(case, backend):
    return func.hessian(_scalar_fn(case, backend), argnums=_argnums(case))(*case.inputs())


def _func_hessian_reverse(case, backend):
    return func.jacrev(func.jacrev(_scalar_fn(case, backend), argnums=_argnums(case)), argnums=_argnums(case))(
        *case.inputs()
    )


def _third_order(case, backend):
    """jacrev of the Hessian: the derivatives of the derivatives of the derivatives are the ops' too."""
    hessian = func.hessian(_scalar_fn(case, backend), argnums=0)
    return func.jacrev(hessian, argnums=_argnums(case))(*case.inputs())


def _batched(case):
    return tuple(torch.stack([t, 0.5 * t + 0.1, -t]) for t in case.inputs())


def _vmap(case, backend):
    return func.vmap(lambda *i: case.outputs(backend, *i))(*_batched(case))


def _vmap_grad(case, backend):
    """Per-sample gradients, the usual reason to vmap a grad."""
    return func.vmap(func.grad(_scalar_fn(case, backend), argnums=_argnums(case)))(*_batched(case))


def _vmap_empty_batch(case, backend):
    """A batch of none: empty outputs, shaped as a sample's behind a batch dimension of 0. (torch's own indexing
    fails on an empty batch under vmap, so the reference's shapes are those of one sample.)"""
    if backend == "torch":
        return [((0, *out.shape), out.dtype) for out in case.outputs(backend, *case.inputs())]
    empty = (t.new_empty((0, *t.shape)) for t in case.inputs())
    return [(tuple(out.shape), out.dtype) for out in func.vmap(lambda *i: case.outputs(backend, *i))(*empty)]


def _vmap_one_batched(case, backend):
    """Only the first input batched, the others shared: the batching rules' mixed case."""
    first, *rest = case.inputs()
    return func.vmap(lambda t: case.outputs(backend, t, *rest))(torch.stack([first, 2 * first]))


def _compiled_step(case, backend):
    """torch.compile(fullgraph=True, dynamic=True) of the probe, its gradient taken by AOTAutograd's backward."""
    torch._dynamo.reset()
    compiled = torch.compile(_scalar_fn(case, backend), fullgraph=True, dynamic=True)
    results = []
    for scale in (1.0, 0.5):  # a second call reuses the graph
        inputs = [(scale * t).requires_grad_() for t in case.inputs()]
        value = compiled(*inputs)
        value.backward()
        results.append((value.detach(), _grads(inputs)))
    return results


class _Probe(torch.nn.Module):
    def __init__(self, case: OpCase, backend: str):
        super().__init__()
        self.case, self.backend = case, backend

    def forward(self, *inputs):
        return self.case.outputs(self.backend, *inputs)


def _export_round_trip(case, backend):
    """torch.export, save to bytes, load, run: the loaded program resolves the ops and gives the eager numbers."""
    inputs = case.inputs()
    program = torch.export.export(_Probe(case, backend), inputs)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    return torch.export.load(buffer).module()(*inputs)


ROUTES = {
    "backward": _backward,
    "grad(create_graph)": _grad_of_grad,
    "backward(create_graph)": _double_backward,
    "functional.hessian": _functional_hessian,
    "functional.hessian(forward-mode)": _functional_hessian_forward,
    "forward over reverse": _forward_over_reverse,
    "functional.hvp": _functional_hvp,
    "functional.jacobian": _functional_jacobian,
    "func.grad": _func_grad,
    "func.vjp": _func_vjp,
    "func.jvp": _func_jvp,
    "func.jacrev": _func_jacrev,
    "func.jacfwd": _func_jacfwd,
    "func.hessian": _func_hessian,
    "jacrev(jacrev)": _func_hessian_reverse,
    "third order": _third_order,
    "vmap": _vmap,
    "vmap(one batched)": _vmap_one_batched,
    "vmap(empty batch)": _vmap_empty_batch,
    "vmap(grad)": _vmap_grad,
    "compile": _compiled_step,
    "export": _export_round_trip,
}
# Routes that do not apply to an entry point: export traces the ops (a Function class runs the op there too), and
# the raw backward ops are outputs-only functions whose own routes are the same as any op's.
FUNCTION_ROUTES = [r for r in ROUTES if r != "export"]


def _assert_same(got, expected):
    if isinstance(got, list) and got and isinstance(got[0], tuple) and isinstance(got[0][-1], torch.dtype):
        assert got == expected  # shapes and dtypes
        return
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11, equal_nan=True)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("case", OPS, ids=str)
def test_op_matches_torch_on_every_route(case, backend, route):
    _assert_same(ROUTES[route](case, backend), ROUTES[route](case, "torch"))


@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "torch"])
@pytest.mark.parametrize("route", FUNCTION_ROUTES)
@pytest.mark.parametrize("case", FUNCTION_OPS, ids=str)
def test_autograd_function_matches_torch_on_every_route(case, backend, route):
    """The Function classes, on every backend (the torch reference's Function included), against plain torch."""
    reference_case = {"PolyForward": OPS[0], "PolyMSE": OPS[2], "Dot": OPS[4]}[case.name]
    _assert_same(ROUTES[route](case, backend), ROUTES[route](reference_case, "torch"))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("case", OPS + FUNCTION_OPS, ids=str)
def test_finite_differences_agree_to_second_order(case, backend):
    """gradgradcheck (reverse over reverse) and forward-mode gradcheck against finite differences: no reference
    involved at all."""
    inputs = [t.requires_grad_() for t in case.inputs()]
    fn = lambda *i: case.outputs(backend, *i)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, check_forward_ad=True, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(fn, inputs, check_fwd_over_rev=True, check_rev_over_rev=True)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_poly_mse_hessian_is_the_gram_matrix(backend):
    """The issue's example: the Hessian of poly_mse in the coefficients is 2/N V^T V, V the power matrix."""
    x, y, c = OPS[2].inputs()
    powers = x.unsqueeze(-1) ** torch.arange(c.numel(), dtype=f64)
    gram = 2 / x.numel() * powers.T @ powers
    loss = lambda c: pykernels.poly_mse(x, y, c, backend=backend).loss  # noqa: E731
    _assert_same(torch.autograd.functional.hessian(loss, c), gram)
    _assert_same(func.hessian(loss)(c), gram)
    a = OPS[4].inputs()[0]
    _assert_same(func.hessian(lambda a: pykernels.dot(a, a, backend=backend))(a), 2 * torch.eye(5, dtype=f64))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_first_order_coefficient_gradient_survives_an_in_place_update(backend):
    """The study's loop updates w in place after backward; with backward after the update, the first-order
    coefficient gradient still needs only the forward's own gradient, as torch's mm would need only X."""
    x, y, c = OPS[2].inputs()
    w = c.clone().requires_grad_()
    loss = pykernels.poly_mse(x, y, w, backend=backend).loss
    expected = pykernels.poly_mse(x, y, c, backend=backend).grad_coeffs
    with torch.no_grad():
        w.add_(1.0)
    loss.backward()
    _assert_same(w.grad, expected)
