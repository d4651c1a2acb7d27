"""What users of extensions and numba trip over, each run for real: the info command, a read-only install with
no HOME, cold caches compiled by four processes at once, parallel kernels from two threads and from forked
workers, and an import that compiles nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import pykernels

ROOT = Path(__file__).resolve().parents[1]
NUMBA_OPS_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        import torch, pykernels
        x = torch.linspace(-1, 1, 1000, dtype=torch.float64); y = torch.cos(x); c = torch.tensor([0.1, 0.2, 0.3],
        dtype=torch.float64)
        results = {}
        for backend in ("numba", "cpp"):
            ops = pykernels.get_backend(backend)
            results[backend] = [
                ops.poly(x, c).sum().item(), ops.poly_mse(x, y, c)[0].item(), ops.poly_backward(y, x, c)[1].tolist(),
                ops.dot(x, y).item(), ops.dot_backward(torch.tensor(2.0, dtype=torch.float64), x, y)[0].sum().item(),
                pykernels.fit_poly(x, y, 2, lr=0.1, steps=5, backend=backend).coeffs.tolist()]
    print(json.dumps({"file": pykernels.__file__, "results": results,
                      "warnings": [str(w.message) for w in caught if "pykernels" in str(w.message)]}))
""")


def test_info_command_reports_the_build():
    result = subprocess.run(
        [sys.executable, "-m", "pykernels", "--info"], capture_output=True, text=True, timeout=120, check=True
    )
    info = json.loads(result.stdout)
    assert info["built_with_torch"] == torch.__version__ == info["torch"]
    assert "cpu" in info["compiled_backends"]
    assert info["numba"]["installed"] and info["numba"]["cache_dir"]
    assert info["cuda_available"] == torch.cuda.is_available()


def _unshare_available() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-m", "true"]).returncode == 0


@pytest.mark.skipif(not _unshare_available(), reason="needs a mount namespace (unshare -m) for a read-only install")
def test_read_only_install_without_home_imports_and_runs_every_numba_op(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(Path(pykernels.__file__).parent, site / "pykernels", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME", "NUMBA_CACHE_DIR")}
    env["PYTHONPATH"] = str(site)
    script = tmp_path / "script.py"
    script.write_text(NUMBA_OPS_SCRIPT)
    # a read-only bind mount: even root cannot write there, as on a system or container install
    command = f"mount --bind {site} {site} && mount -o remount,bind,ro {site} && exec {sys.executable} {script}"
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", command], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["file"].startswith(str(site))
    assert len(report["warnings"]) <= 1
    np.testing.assert_allclose(
        np.hstack([np.ravel(v) for v in report["results"]["numba"]]),
        np.hstack([np.ravel(v) for v in report["results"]["cpp"]]),
        rtol=1e-12,
        atol=1e-12,
    )


def test_four_processes_compile_a_cold_cache_at_once(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    script = tmp_path / "script.py"
    script.write_text(NUMBA_OPS_SCRIPT)
    processes = [
        subprocess.Popen(
            [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
        report = json.loads(stdout.strip().splitlines()[-1])
        np.testing.assert_allclose(
            np.hstack([np.ravel(v) for v in report["results"]["numba"]]),
            np.hstack([np.ravel(v) for v in report["results"]["cpp"]]),
            rtol=1e-12,
            atol=1e-12,
        )


def _parallel_sized():
    x = torch.linspace(0, 1, 300_000, dtype=torch.float64)  # above PARALLEL_THRESHOLD: the parallel kernels
    return x, torch.sin(x), torch.tensor([0.5, -0.25, 0.125], dtype=torch.float64)


def test_parallel_numba_ops_from_two_python_threads():
    x, y, c = _parallel_sized()
    expected = pykernels.poly_mse(x, y, c, backend="numba").loss
    errors, results = [], []

    def work():
        try:
            results.extend(pykernels.poly_mse(x, y, c, backend="numba").loss for _ in range(20))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and len(results) == 40
    assert all(torch.equal(r, expected) for r in results)


class _PolyMSEDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        x, y, c = _parallel_sized()
        return pykernels.poly_mse(x, y, c * (index + 1), backend="numba").loss


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_parallel_numba_ops_in_forked_dataloader_workers():
    x, y, c = _parallel_sized()
    expected = torch.stack([pykernels.poly_mse(x, y, c * (i + 1), backend="numba").loss for i in range(4)])
    loader = torch.utils.data.DataLoader(
        _PolyMSEDataset(), batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=300
    )
    torch.testing.assert_close(torch.stack(list(loader)), expected, rtol=1e-14, atol=0)


def test_import_compiles_nothing_and_warmup_reports_seconds(tmp_path):
    code = textwrap.dedent("""
        import json, sys
        import pykernels
        before = "numba" in sys.modules
        pykernels.get_backend("numba")
        from pykernels.numba import cpu
        compiled_on_load = sum(len(f.signatures) for f in (cpu._poly_mse_serial, cpu._dot_serial, cpu._poly_serial))
        seconds = pykernels.numba.warmup(dtypes=("float64",), parallel=False)
        print(json.dumps({"numba_imported_by_import": before, "compiled_on_load": compiled_on_load,
                          "seconds": seconds}))
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["numba_imported_by_import"] is False
    assert report["compiled_on_load"] == 0
    assert set(report["seconds"]) == {
        f"{op}[float64,serial]" for op in ("poly", "poly_backward", "poly_mse", "dot", "dot_backward")
    }
    assert all(s > 0 for s in report["seconds"].values())
