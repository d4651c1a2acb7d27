"""The asv suite: every benchmark module imports with only the required dependencies, CUDA timings go through the
synchronizing wrapper, and a quick run publishes a dashboard that renders in headless Chromium."""

from __future__ import annotations

import ast
import contextlib
import functools
import http.server
import importlib
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASV_DIR = ROOT / "asv_bench"
MODULES = sorted(p.stem for p in (ASV_DIR / "benchmarks").glob("bench_*.py"))


@pytest.fixture(scope="module")
def benchmarks_package():
    sys.path.insert(0, str(ASV_DIR))
    try:
        yield importlib.import_module("benchmarks")
    finally:
        sys.path.remove(str(ASV_DIR))


@pytest.mark.parametrize("module", MODULES)
def test_benchmark_module_imports(benchmarks_package, module):
    loaded = importlib.import_module(f"benchmarks.{module}")
    classes = [c for _, c in inspect.getmembers(loaded, inspect.isclass) if c.__module__ == loaded.__name__]
    assert any(any(n.startswith(("time_", "track_", "peakmem_")) for n in dir(c)) for c in classes)


@pytest.mark.parametrize("module", MODULES)
def test_every_device_benchmark_synchronizes(module):
    """A class with a device axis must build its timed callable through common.synchronized."""
    tree = ast.parse((ASV_DIR / "benchmarks" / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        source = ast.get_source_segment((ASV_DIR / "benchmarks" / f"{module}.py").read_text(), node)
        if '"device"' in source:
            assert "synchronized(device" in source, f"{module}.{node.name} times a device without synchronizing"


def _run(args, **kwargs):
    if args[0] == "asv":  # the asv of this interpreter, whether or not its venv is on PATH
        args = [sys.executable, "-m", "asv", *args[1:]]
    result = subprocess.run(args, cwd=ASV_DIR, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@contextlib.contextmanager
def _serve(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.mark.slow
def test_quick_run_publishes_a_dashboard_that_renders(tmp_path):
    if importlib.util.find_spec("asv") is None:
        pytest.skip("asv not installed (pip install '.[test]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's chromium)")
    _run(["asv", "check", "--python=same"])
    _run(["asv", "machine", "--yes", "--machine", "ci-quick"])
    _run(
        [
            "asv",
            "run",
            "--python=same",
            "--quick",
            "--set-commit-hash",
            "HEAD",
            "--machine",
            "ci-quick",
            "--show-stderr",
            "-b",
            "^bench_overhead.AutogradRoute.time_forward_backward",
        ]
    )
    assert any((ASV_DIR / "results" / "ci-quick").glob("*.json"))
    _run(["asv", "publish"])
    html = ASV_DIR / "html"
    assert (html / "index.html").exists()
    if shutil.which("npm") is None:
        pytest.skip("npm not installed: the dashboard's scripts cannot be vendored for an offline browser")
    _run([sys.executable, "vendor_dashboard.py"])  # asv's page loads its scripts from CDNs; serve them locally
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
        "--window-size=1400,1000",
    ]
    screenshot = Path(os.environ.get("PYKERNELS_ARTIFACTS", tmp_path)) / "asv-dashboard.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with _serve(html) as url:
        page = f"{url}/#bench_overhead.AutogradRoute.time_forward_backward"
        dom = subprocess.run([chromium, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
        subprocess.run([chromium, *flags, f"--screenshot={screenshot}", page], capture_output=True, timeout=120)
    assert "AutogradRoute.time_forward_backward" in dom.stdout  # the benchmark list
    assert "flot-base" in dom.stdout or "<canvas" in dom.stdout  # a drawn graph
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
