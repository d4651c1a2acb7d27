"""linear_sgd_step: the large problem's fused epoch against the write-up's autograd step."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES

import pykernels


def _write_up_step(w, b, x, y, lr):
    w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
    loss = torch.sum((torch.dot(w, x) + b - y) ** 2)
    loss.backward()
    with torch.no_grad():
        return w - lr * w.grad, b - lr * b.grad, loss.detach()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("n", [1, 1000, 100_003])
def test_fused_step_matches_the_write_ups_autograd_step(device, dtype, n):
    generator = torch.Generator().manual_seed(n)
    w = torch.rand(n, dtype=dtype, generator=generator).to(device)
    b = torch.ones(1, dtype=dtype, device=device)
    x = torch.randn(n, dtype=dtype, generator=generator).to(device)
    y = torch.dot(3 * torch.ones(n, dtype=dtype, device=device), x) - 2
    lr = 0.5 / n
    expected_w, expected_b, expected_loss = _write_up_step(w, b, x, y, lr)
    loss = pykernels.linear_sgd_step(w, b, x, y, lr)
    rtol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(loss, expected_loss.reshape(()), rtol=rtol, atol=0)
    torch.testing.assert_close(w, expected_w, rtol=rtol, atol=rtol)
    torch.testing.assert_close(b, expected_b, rtol=rtol, atol=rtol)


def test_bad_input_is_named():
    w, x = torch.ones(4), torch.ones(5)
    with pytest.raises(ValueError, match=r"x must have the same shape as w \[4\], got \[5\]"):
        pykernels.linear_sgd_step(w, torch.ones(1), x, torch.tensor(1.0), 0.1)
    with pytest.raises(ValueError, match="b must hold a single value"):
        pykernels.linear_sgd_step(w, torch.ones(2), torch.ones(4), torch.tensor(1.0), 0.1)
    with pytest.raises(TypeError, match="y must have the same dtype as w"):
        pykernels.linear_sgd_step(w, torch.ones(1), torch.ones(4), torch.tensor(1.0, dtype=torch.float64), 0.1)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    w, b, x = torch.rand(50, device=device), torch.ones(1, device=device), torch.randn(50, device=device)
    torch.library.opcheck(
        torch.ops.pykernels.linear_sgd_step.default, (w, b, x, torch.tensor(0.5, device=device), 0.01)
    )


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a CUDA GPU")
def test_cuda_step_equals_the_cpu_step():
    """Both kernels sum w.x in float64 chunks (bit patterns may differ by the summation order only)."""
    generator = torch.Generator().manual_seed(3)
    w, x = torch.rand(100_003, generator=generator), torch.randn(100_003, generator=generator)
    b, y = torch.ones(1), torch.dot(3 * torch.ones(100_003), x) - 2
    w_gpu, b_gpu = w.cuda(), b.cuda()
    loss_gpu = pykernels.linear_sgd_step(w_gpu, b_gpu, x.cuda(), y.cuda(), 1e-5)
    loss = pykernels.linear_sgd_step(w, b, x, y, 1e-5)
    torch.testing.assert_close(loss_gpu.cpu(), loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(w_gpu.cpu(), w, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b_gpu.cpu(), b, rtol=1e-6, atol=1e-7)
