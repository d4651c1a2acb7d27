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
        [sys.executable, "-m", "pykernels", "info"], capture_output=True, text=True, timeout=120, check=True
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


def _run_script(code: str, tmp_path: Path, *, timeout: float = 600) -> dict:
    """Run `code` in a fresh interpreter (no state from this one); its last stdout line is JSON."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_workers_run_batched_numba_fits_after_the_parent_ran_parallel_kernels(tmp_path):
    """A parent that ran parallel numba kernels (GNU OpenMP is not fork-safe) forks DataLoader workers and a
    multiprocessing.Pool; their batched fits (the path that used to abort or hang) run serially and agree."""
    report = _run_script(
        """
        import json, multiprocessing
        import torch, pykernels
        from pykernels.numba import _config

        def fit(seed):
            y = torch.sin(torch.linspace(0, 3, 200, dtype=torch.float64) * (1 + seed / 10)).repeat(64, 1)
            x = torch.linspace(0, 3, 200, dtype=torch.float64)
            return pykernels.fit_poly(x, y, 3, lr=0.01, steps=20, backend="numba").coeffs

        class Fits(torch.utils.data.Dataset):
            def __len__(self):
                return 4

            def __getitem__(self, i):
                return fit(i)

        x = torch.linspace(0, 1, 1 << 18, dtype=torch.float64)
        pykernels.poly_mse(x, torch.sin(x), torch.ones(3, dtype=torch.float64), backend="numba")  # parallel
        expected = torch.stack([fit(i) for i in range(4)])  # parallel batched fits in the parent
        loader = torch.utils.data.DataLoader(Fits(), batch_size=None, num_workers=2,
                                             multiprocessing_context="fork", timeout=300)
        from_loader = torch.stack(list(loader))
        with multiprocessing.get_context("fork").Pool(2) as pool:
            from_pool = torch.stack(pool.map(fit, range(4)))
        print(json.dumps({"loader": (from_loader - expected).abs().max().item(),
                          "pool": (from_pool - expected).abs().max().item(),
                          "parent_forked": _config.forked}))
        """,
        tmp_path,
        timeout=300,
    )
    assert report == {"loader": 0.0, "pool": 0.0, "parent_forked": False}


def test_first_numba_use_from_several_threads_at_once(tmp_path):
    """Four threads make the process's first numba calls together (ops and a batched fit)."""
    report = _run_script(
        """
        import json, threading
        import torch, pykernels

        x = torch.linspace(-1, 1, 300_000, dtype=torch.float64)
        c = torch.tensor([0.5, -0.25, 0.125], dtype=torch.float64)
        start, results, errors = threading.Barrier(4), {}, []

        def work(i):
            try:
                start.wait()
                loss = pykernels.poly_mse(x, torch.cos(x), c, backend="numba").loss
                fit = pykernels.fit_poly(x[:100], torch.cos(x[:100]).repeat(4, 1), 2, lr=0.1, steps=5,
                                         backend="numba").coeffs
                results[i] = [loss.item(), fit.sum().item()]
            except Exception as error:
                errors.append(repr(error))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected = [pykernels.poly_mse(x, torch.cos(x), c, backend="cpp").loss.item()]
        print(json.dumps({"errors": errors, "results": list(results.values()), "cpp": expected}))
        """,
        tmp_path,
    )
    assert report["errors"] == [] and len(report["results"]) == 4
    assert all(r == report["results"][0] for r in report["results"])
    assert report["results"][0][0] == pytest.approx(report["cpp"][0], rel=1e-13)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_compile_fullgraph_works_on_the_first_call_in_a_fresh_process(tmp_path, backend):
    """No eager warm-up: the first call of a fullgraph, dynamic compile traces the ops (numba's too, which have
    not been called yet), and a second call with another length reuses the graph."""
    report = _run_script(
        f"""
        import json
        import torch, pykernels
        from torch._dynamo.utils import counters

        def loss_fn(x, y, w):
            return pykernels.poly_mse(x, y, w, backend="{backend}").loss

        compiled = torch.compile(loss_fn, fullgraph=True, dynamic=True)
        results = []
        for n in (50, 70):
            x = torch.linspace(0, 1, n, dtype=torch.float64)
            w_compiled, w_eager = (torch.full((4,), 0.3, dtype=torch.float64, requires_grad=True) for _ in "ab")
            got, want = compiled(x, torch.sin(x), w_compiled), loss_fn(x, torch.sin(x), w_eager)
            got.backward()
            want.backward()
            results += [(got - want).abs().item(), (w_compiled.grad - w_eager.grad).abs().max().item()]
        print(json.dumps({{"errors": results, "graphs": counters["stats"]["unique_graphs"]}}))
        """,
        tmp_path,
    )
    assert report["graphs"] == 1
    assert max(report["errors"]) < 1e-12


@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_exported_program_loads_and_runs_in_a_fresh_process(tmp_path, backend):
    """torch.export -> save here; load -> run in a process that only imported torch and pykernels (numba ops
    included: they resolve without numba having been imported)."""

    class Model(torch.nn.Module):
        def forward(self, x, y, w):
            result = pykernels.poly_mse(x, y, w, backend=backend)
            return result, pykernels.poly(x, w, backend=backend), pykernels.dot(x, y, backend=backend)

    x = torch.linspace(-1, 1, 33, dtype=torch.float64)
    args = (x, torch.cos(x), torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))
    torch.export.save(torch.export.export(Model(), args), tmp_path / "model.pt2")
    torch.save(args, tmp_path / "args.pt")
    expected = Model()(*args)
    report = _run_script(
        f"""
        import json, sys
        import torch, pykernels
        numba_imported = "numba" in sys.modules
        program = torch.export.load({str(tmp_path / "model.pt2")!r})
        (loss, grad), y, dot = program.module()(*torch.load({str(tmp_path / "args.pt")!r}))
        print(json.dumps({{"values": [loss.item(), grad.tolist(), y.tolist(), dot.item()],
                           "numba_imported_before_load": numba_imported, "type": type(loss).__name__}}))
        """,
        tmp_path,
    )
    assert report["numba_imported_before_load"] is False
    (loss, grad), y, dot = expected
    assert report["values"] == [loss.item(), grad.tolist(), y.tolist(), dot.item()]


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_compiled_kernels_in_a_forked_pool_as_torch_documents(tmp_path):
    """The compiled kernels run on torch's thread pool: in a Pool forked after parallel work they need what torch's
    own ops need there (one thread per child), and then agree bit for bit (their results do not depend on the
    thread count)."""
    report = _run_script(
        """
        import json, multiprocessing
        import torch, pykernels

        x = torch.linspace(0, 1, 1 << 20, dtype=torch.float64)
        def work(i):
            fit = pykernels.fit_poly(x[:1000], torch.sin(x[:1000] * i).repeat(32, 1), 3, lr=0.1, steps=20)
            return [pykernels.poly_mse(x, torch.sin(x), torch.full((4,), float(i), dtype=torch.float64)).loss.item(),
                    fit.coeffs.sum().item()]

        expected = [work(i) for i in range(4)]  # parallel in the parent
        with multiprocessing.get_context("fork").Pool(2, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            print(json.dumps({"same": pool.map(work, range(4)) == expected}))
        """,
        tmp_path,
        timeout=120,
    )
    assert report == {"same": True}


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_fork_while_another_thread_makes_the_first_numba_call(tmp_path):
    """A thread loads numba and compiles (the process's first numba call) while the main thread forks at several
    moments of it: the fork waits for the load and the compile, so no child starts with their locks held."""
    report = _run_script(
        """
        import json, os, sys, threading, time
        import torch, pykernels

        x = torch.linspace(-1, 1, 1000, dtype=torch.float64)
        ones = torch.ones(3, dtype=torch.float64)
        statuses = []
        for delay in (0.0, 0.05, 0.2):
            thread = threading.Thread(target=lambda: pykernels.poly_mse(x, x, ones * (1 + delay), backend="numba"))
            thread.start()
            time.sleep(delay)
            pid = os.fork()
            if pid == 0:
                pykernels.poly_mse(x, x, ones, backend="numba")
                os._exit(0)
            thread.join()
            deadline, (finished, status) = time.time() + 60, os.waitpid(pid, os.WNOHANG)
            while not finished and time.time() < deadline:
                time.sleep(0.05)
                finished, status = os.waitpid(pid, os.WNOHANG)
            if not finished:
                os.kill(pid, 9)
            statuses.append("ok" if finished and status == 0 else "hung or failed")
        print(json.dumps(statuses))
        """,
        tmp_path,
        timeout=300,
    )
    assert report == ["ok", "ok", "ok"]


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_pykernels_first_imported_in_a_forked_worker_runs_serially(tmp_path):
    """The parent used torch's OpenMP and imports pykernels only in its forked workers: the workers know they were
    forked (multiprocessing tells) and run the serial numba kernels."""
    report = _run_script(
        """
        import json, torch

        (torch.linspace(-1, 1, 4_000_000, dtype=torch.float64) * 2).sum()  # OpenMP in the parent

        class Data(torch.utils.data.Dataset):
            def __len__(self):
                return 2

            def __getitem__(self, i):
                import pykernels
                from pykernels.numba import _config

                x = torch.arange(300_000, dtype=torch.float64) / 300_000
                loss = pykernels.poly_mse(x, x, torch.ones(3, dtype=torch.float64), backend="numba").loss.item()
                return loss, _config.forked

        loader = torch.utils.data.DataLoader(Data(), batch_size=None, num_workers=2,
                                             multiprocessing_context="fork", timeout=120)
        print(json.dumps(list(loader)))
        """,
        tmp_path,
        timeout=300,
    )
    assert [forked for _, forked in report] == [True, True]
    assert report[0][0] == report[1][0]


NUMBA_DOT_SCRIPT = textwrap.dedent("""
    import json, warnings
    import numpy as np
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        from pykernels.numba import cpu
        a = np.linspace(0, 1, 1001)
        value = float(cpu.dot(a, np.cos(a)))
    print(json.dumps({"dot": value, "warnings": [str(w.message) for w in caught if "pykernels" in str(w.message)]}))
""")


def _cut_short(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        ("index cut short", "*.nbi"),
        ("index emptied", "*.nbi"),
        ("data cut short", "*.nbc"),
        ("data zeroed inside", "*.nbc"),  # still unpickles: it reached LLVM, which failed or crashed on it
    ],
)
def test_a_damaged_numba_cache_file_is_named_dropped_and_recompiled(tmp_path, damage, pattern):
    """numba's cache index or data file cut short (a full disk, an interrupted copy, a crash before it reached the
    disk): numba raised UnpicklingError ("pickle data was truncated") from every call, naming no file. Now the first
    call after the damage warns naming each damaged file, deletes it and recompiles; later runs load the new cache
    quietly."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run() -> dict:
        result = subprocess.run(
            [sys.executable, "-c", NUMBA_DOT_SCRIPT], env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    a = np.linspace(0, 1, 1001)
    expected = float(np.dot(a, np.cos(a)))
    assert run() == {"dot": pytest.approx(expected, rel=1e-12), "warnings": []}  # compiles and caches
    damaged = sorted((tmp_path / "cache").rglob(pattern))
    assert damaged
    for path in damaged:
        if damage == "index emptied":
            os.truncate(path, 0)
        elif damage == "data zeroed inside":
            with open(path, "r+b") as f:  # a page of zeros half-way in, the size unchanged
                f.seek(path.stat().st_size // 2)
                f.write(bytes(min(4096, path.stat().st_size // 4)))
        else:
            _cut_short(path)
    first = run()  # the first run after the damage
    assert first["dot"] == pytest.approx(expected, rel=1e-12)
    assert len(first["warnings"]) == len(damaged), first["warnings"]
    for path, warning in zip(damaged, sorted(first["warnings"]), strict=True):
        assert f"numba's cache file {path} is damaged" in warning and "recompiling" in warning, warning
    assert run() == {"dot": pytest.approx(expected, rel=1e-12), "warnings": []}  # later runs: the cache is whole


def test_info_works_from_an_uninstalled_source_tree(monkeypatch):
    """A checkout on PYTHONPATH has no distribution metadata: info names the source tree's version and folder."""
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    version = pykernels.build_info()["pykernels"]
    assert (
        version.startswith(f"{pykernels.__version__} (not installed: ")
        and Path(pykernels.__file__).parent.name in version
    )
