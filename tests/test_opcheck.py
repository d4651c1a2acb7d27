"""torch.library.opcheck on every registered op (schema, autograd registration, fake tensor, AOT dispatch),
with and without requires_grad, for every kernel backend, dtype and device."""

from __future__ import annotations

import pytest
import torch
from conftest import CASES, DEVICES, DTYPES, KERNEL_BACKENDS, make_dot_inputs, make_poly_inputs

import pykernels

OPCHECK_CASES = [CASES[0], CASES[2], CASES[4], CASES[5]]


def samples(op: str, dtype, device, requires_grad: bool):
    for case in OPCHECK_CASES:
        x, y, coeffs = make_poly_inputs(case, dtype, device, requires_grad=requires_grad)
        a, b = x.reshape(-1)[:5], y.reshape(-1)[:5]  # reshape of a strided view may copy: still a valid input
        if case.contiguous:
            a, b = make_dot_inputs(x.numel(), dtype, device, requires_grad=requires_grad)
        yield {
            "poly": (x, coeffs),
            "poly_backward": (y, x, coeffs),
            "poly_mse": (x, y, coeffs),
            "dot": (a, b),
            "dot_backward": (torch.tensor(1.5, dtype=dtype, device=device).requires_grad_(requires_grad), a, b),
        }[op]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("op", ["poly", "poly_backward", "poly_mse", "dot", "dot_backward"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(backend, op, dtype, device, requires_grad):
    overload = getattr(pykernels.get_backend(backend), op)
    assert isinstance(overload, torch._ops.OpOverload)
    for args in samples(op, dtype, device, requires_grad):
        torch.library.opcheck(overload, args)
