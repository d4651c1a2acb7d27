"""The ops that write their arguments or have no derivative follow torch's rules, as its built-in ops do.

In place (linear_sgd_step, linear_sgd_philox, philox_normal's out): what they write has its version counter moved
(a graph that saved it refuses to backpropagate, as after torch's ``w -= ...``); a leaf that requires grad is
refused outside ``torch.no_grad()``; arguments that share memory with a written one are refused. Not
differentiable (fit_poly and those three): differentiating their results raises, by every route, with a message
that says so; never a gradient from a clone, never a silent None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import KERNEL_BACKENDS

import pykernels

N = 64


@dataclass(frozen=True)
class InPlaceCase:
    """An in-place op: call(written tensors..., ) runs it; `written` makes its written arguments (in order)."""

    name: str
    written: tuple[str, ...]
    call: object

    def make(self):
        return {"w": torch.zeros(N), "b": torch.zeros(1), "buffer": torch.empty(N), "out": torch.empty(N)}

    def __str__(self):
        return self.name


def _step(t):
    pykernels.linear_sgd_step(t["w"], t["b"], torch.linspace(-1, 1, N), torch.tensor(0.5), 0.1)


def _philox(t):
    pykernels.linear_sgd_philox(t["w"], t["b"], lr=1e-3, epochs=2, seed=3, buffer=t["buffer"])


def _sampler(t):
    pykernels.philox_normal(N, seed=5, out=t["out"])


IN_PLACE = [
    InPlaceCase("linear_sgd_step", ("w", "b"), _step),
    InPlaceCase("linear_sgd_philox", ("w", "b", "buffer"), _philox),
    InPlaceCase("philox_normal", ("out",), _sampler),
]


@pytest.mark.parametrize("case", IN_PLACE, ids=str)
def test_written_tensors_move_their_version_counters(case):
    tensors = case.make()
    before = {name: t._version for name, t in tensors.items()}
    case.call(tensors)
    for name, t in tensors.items():
        assert t._version == before[name] + (name in case.written), name


@pytest.mark.parametrize("case", IN_PLACE, ids=str)
def test_a_graph_that_saved_a_written_tensor_refuses_to_backpropagate(case):
    for name in case.written:
        tensors = case.make()
        source = torch.zeros_like(tensors[name], requires_grad=True)
        tensors[name] = source * 1.0  # a non-leaf in a graph that saves it (x * x saves x)
        saved = (tensors[name] * tensors[name]).sum()
        with torch.no_grad():
            case.call(tensors)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            saved.backward()


@pytest.mark.parametrize("case", IN_PLACE, ids=str)
def test_a_leaf_that_requires_grad_is_refused_outside_no_grad(case):
    for name in case.written:
        tensors = case.make()
        tensors[name].requires_grad_()
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
            case.call(tensors)
        view = case.make()
        view[name] = torch.zeros(2 * view[name].numel(), requires_grad=True)[: view[name].numel()]
        with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
            case.call(view)
        with torch.no_grad():  # where torch allows it, so do the ops: the same numbers as on plain tensors
            case.call(tensors)
        plain = case.make()
        case.call(plain)
        torch.testing.assert_close(tensors[name].detach(), plain[name], rtol=0, atol=0)


@pytest.mark.parametrize("case", IN_PLACE, ids=str)
def test_backpropagating_through_a_written_tensor_raises(case):
    """A non-leaf that requires grad may be written (torch rebases its history), but its new values have no
    derivative: backward through them says so instead of flowing through the old graph."""
    for name in case.written:
        tensors = case.make()
        tensors[name] = torch.zeros_like(tensors[name], requires_grad=True) * 1.0
        case.call(tensors)
        assert tensors[name].requires_grad
        with pytest.raises(RuntimeError, match=r"is not differentiable: "):
            tensors[name].sum().backward()


@pytest.mark.parametrize("case", IN_PLACE, ids=str)
def test_writing_a_view_in_a_recorded_graph_rebases_its_base_like_torch(case):
    """A written view of a non-leaf that requires grad: torch rebases the base's history (CopySlices), as for its
    own in-place ops on views; backpropagating through the base then reaches the op and raises."""
    for name in case.written:
        tensors = case.make()
        base = torch.zeros(2 * tensors[name].numel(), requires_grad=True) * 1.0
        tensors[name] = base[: tensors[name].numel()]
        case.call(tensors)
        assert type(base.grad_fn).__name__ == "CopySlices"
        with pytest.raises(RuntimeError, match=r"is not differentiable: "):
            base.sum().backward()


@pytest.mark.parametrize("case", IN_PLACE, ids=str)
def test_inference_mode_writes_like_torch(case):
    tensors = case.make()
    with torch.inference_mode():
        case.call(tensors)
    plain = case.make()
    case.call(plain)
    for name in case.written:
        torch.testing.assert_close(tensors[name], plain[name], rtol=0, atol=0)


def test_arguments_sharing_memory_with_a_written_one_are_refused():
    w, b, x = torch.zeros(N), torch.zeros(1), torch.linspace(-1, 1, N)
    storage = torch.zeros(N + 1)
    refused = {
        "w and x": lambda: pykernels.linear_sgd_step(w, b, w, torch.tensor(0.5), 0.1),
        "w and b": lambda: pykernels.linear_sgd_step(storage[:N], storage[N - 1 : N], x, torch.tensor(0.5), 0.1),
        "b and y": lambda: pykernels.linear_sgd_step(w, b, x, b.view(()), 0.1),
        "buffer and w": lambda: pykernels.linear_sgd_philox(w.float(), b, lr=0.1, epochs=1, seed=1, buffer=w),
    }
    for names, call in refused.items():
        first, second = names.split(" and ")
        pattern = rf"({first} and {second}|{second} and {first}) must not share memory"
        with pytest.raises(ValueError, match=pattern):
            call()
    assert torch.equal(w, torch.zeros(N)) and torch.equal(b, torch.zeros(1))  # nothing ran
    # memory shared without a shared storage (two tensors over one NumPy array) is seen too
    array = np.zeros(N + 1)
    with pytest.raises(ValueError, match="w and x must not share memory"):
        pykernels.linear_sgd_step(
            torch.from_numpy(array[1:]),
            torch.zeros(1, dtype=torch.float64),
            torch.from_numpy(array[:-1]),
            torch.tensor(0.5, dtype=torch.float64),
            0.1,
        )
    # disjoint parts of one storage are fine, and so are strided or expanded x with memory of their own
    pykernels.linear_sgd_step(storage[:N], storage[N:], x, torch.tensor(0.5), 0.1)
    assert storage[N].item() != 0
    for other in (torch.linspace(-1, 1, 2 * N)[::2], torch.ones(1).expand(N)):
        expected = torch.zeros(N) - 0.1 * 2 * (0 - 0.5) * other
        w = torch.zeros(N)
        pykernels.linear_sgd_step(w, torch.zeros(1), other, torch.tensor(0.5), 0.1)
        torch.testing.assert_close(w, expected)


# --- not differentiable ------------------------------------------------------------------------------------------


def _fit(method):
    def make(backend):
        x = torch.linspace(-1, 1, 20, dtype=torch.float64)
        fit = pykernels.fit_poly
        return lambda init: fit(x, torch.cos(x), 2, lr=0.1, steps=5, init=init, method=method, backend=backend).coeffs

    return make


def _moments(backend):
    return lambda x: pykernels.poly_moments(x, torch.cos(x).detach(), 2, backend=backend).cross_sums


def _written_w(_backend):
    def call(w0):
        w = w0 * 1.0
        pykernels.linear_sgd_step(
            w, torch.zeros(1, dtype=w.dtype), torch.ones_like(w), torch.tensor(1.0, dtype=w.dtype), 0.1
        )
        return w

    return call


NOT_DIFFERENTIABLE = [
    ("fit_poly", _fit("data"), KERNEL_BACKENDS),
    ("fit_poly_moments", _fit("gram"), KERNEL_BACKENDS),
    ("fit_poly(_moments)?", _fit("auto"), KERNEL_BACKENDS),  # torch.func routes take the data pass
    ("poly_moments", _moments, KERNEL_BACKENDS),
    ("linear_sgd_step", _written_w, ["cpp"]),
]
CASES = [(name, make, backend) for name, make, backends in NOT_DIFFERENTIABLE for backend in backends]


@pytest.mark.parametrize(
    ("name", "make", "backend"), CASES, ids=[f"{c[0].replace('(_moments)?', '-auto')}-{c[2]}" for c in CASES]
)
def test_differentiating_a_non_differentiable_op_raises_on_every_route(name, make, backend):
    fn = make(backend)
    start = torch.zeros(3, dtype=torch.float64)
    message = rf"{name} is not differentiable: "
    leaf = start.clone().requires_grad_()
    result = fn(leaf)
    assert result.requires_grad  # not silently constant: its backward is what raises
    with pytest.raises(RuntimeError, match=message):
        result.sum().backward()
    assert leaf.grad is None
    with pytest.raises(RuntimeError, match=message):
        torch.autograd.grad(fn(leaf).sum(), leaf)
    with pytest.raises(RuntimeError, match=message):
        torch.func.grad(lambda s: fn(s).sum())(start)
    with pytest.raises(RuntimeError, match=message):
        torch.func.jacrev(fn)(start)
    with pytest.raises(NotImplementedError, match=message):  # forward mode raises at once
        torch.func.jvp(fn, (start,), (torch.ones_like(start),))
    with pytest.raises(NotImplementedError, match=message):
        torch.func.jacfwd(fn)(start)
    with pytest.raises(Exception, match=message):  # compile traces the backward ahead, and raises there
        torch._dynamo.reset()
        torch.compile(lambda s: fn(s).sum(), fullgraph=True)(leaf).backward()
    with torch.no_grad():  # without a graph the op just runs, as any op does
        assert not fn(leaf).requires_grad


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_fit_poly_runs_under_vmap(backend):
    """vmap over the series of fit_poly (torch's loop over the batch) equals the batched call."""
    x = torch.linspace(-1, 1, 20, dtype=torch.float64)
    ys = torch.stack([torch.cos(x), torch.sin(x), x**2])
    mapped = torch.func.vmap(lambda y: pykernels.fit_poly(x, y, 2, lr=0.1, steps=5, backend=backend).coeffs)(ys)
    batched = pykernels.fit_poly(x, ys, 2, lr=0.1, steps=5, backend=backend).coeffs
    torch.testing.assert_close(mapped, batched, rtol=1e-12, atol=1e-14)


def test_in_place_ops_under_vmap_raise_torchs_error():
    with pytest.raises(RuntimeError, match="Batching rule not implemented for pykernels::linear_sgd_step"):
        torch.func.vmap(lambda w: pykernels.linear_sgd_step(w, torch.zeros(1), torch.ones(N), torch.tensor(1.0), 0.1))(
            torch.zeros(3, N)
        )
