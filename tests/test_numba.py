"""numba-specific guarantees: the CUDA kernels (in the simulator, in their own process), compile-once caching, and
that calling numba leaves torch's thread count alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import pykernels

ROOT = Path(__file__).resolve().parents[1]


def test_numba_cuda_kernels_in_the_simulator():
    """NUMBA_ENABLE_CUDASIM=1 replaces numba.cuda process-wide: a separate pytest process runs tests/cudasim."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cudasim"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]


def test_no_module_name_is_redirected_by_numba_cuda():
    """numba-cuda installs an import hook that redirects every module whose name contains "numba.cuda" into its own
    package; a module of ours named so (pykernels.numba.cuda was) made it recurse until RecursionError."""
    import pkgutil

    names = [module.name for module in pkgutil.walk_packages(pykernels.__path__, "pykernels.")]
    assert "pykernels.numba.gpu" in names
    assert [name for name in names if "numba.cuda" in name] == []


def test_numba_ops_leave_torch_threads_alone():
    before = torch.get_num_threads()
    x = torch.rand(300_000)  # above the parallel threshold: the parallel kernels run
    pykernels.poly_mse(x, x, torch.ones(3), backend="numba")
    pykernels.dot(x, x, backend="numba")
    assert torch.get_num_threads() == before


def test_numpy_api_matches_the_torch_ops():
    from pykernels.numba import cpu

    rng = np.random.default_rng(0)
    x, y, c = rng.random(1000), rng.random(1000), rng.random(4)
    loss, grad = cpu.poly_mse(x, y, c)
    expected = pykernels.poly_mse(*map(torch.from_numpy, (x, y, c)), backend="numba")
    assert loss == expected.loss.item()
    np.testing.assert_array_equal(grad, expected.grad_coeffs.numpy())
    np.testing.assert_array_equal(
        cpu.poly(x.reshape(10, 100), c),
        pykernels.poly(torch.from_numpy(x.reshape(10, 100)), torch.from_numpy(c), backend="numba").numpy(),
    )


def test_second_process_reuses_the_disk_cache(tmp_path):
    """warmup() in a cold cache compiles; the same in a second process loads from the cache, much faster."""
    code = (
        "import json, pykernels.numba as m; s = m.warmup(dtypes=('float32',), parallel=False); "
        "print(json.dumps(sum(s.values())))"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def seconds():
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return float(result.stdout.strip().splitlines()[-1])

    cold, warm = seconds(), seconds()
    assert any(tmp_path.rglob("*.nbi")), "no cache index written"
    assert warm < cold / 2, (cold, warm)
