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


def _from_asv_dir(module: str):
    """A module of asv_bench/ (the benchmarks package, tracked.py), imported as asv imports it."""
    sys.path.insert(0, str(ASV_DIR))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(ASV_DIR))


@pytest.fixture(scope="module")
def benchmarks_package():
    return _from_asv_dir("benchmarks")


@pytest.mark.parametrize("module", MODULES)
def test_benchmark_module_imports(benchmarks_package, module):
    loaded = importlib.import_module(f"benchmarks.{module}")
    classes = [c for _, c in inspect.getmembers(loaded, inspect.isclass) if c.__module__ == loaded.__name__]
    assert any(any(n.startswith(("time_", "track_", "peakmem_")) for n in dir(c)) for c in classes)


@pytest.mark.parametrize("module", MODULES)
def test_every_device_benchmark_synchronizes(module):
    """A class with a device axis must build its timed callable through common.synchronized, itself or by setting up
    a benchmark class of the module that does (and whose subclasses inherit it)."""
    text = (ASV_DIR / "benchmarks" / f"{module}.py").read_text()
    classes = {node.name: node for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ClassDef)}
    sources = {name: ast.get_source_segment(text, node) for name, node in classes.items()}
    synchronizing = {name for name, source in sources.items() if "synchronized(device" in source}
    synchronizing |= {
        name for name, node in classes.items() if any(getattr(b, "id", None) in synchronizing for b in node.bases)
    }
    for name, source in sources.items():
        if '"device"' not in source or name in synchronizing:
            continue
        delegates = [other for other in synchronizing if f"{other}()" in source]
        assert delegates, f"{module}.{name} times a device without synchronizing"


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
    # the committed reference history: its graphs have points for many commits
    history = _graph_points(html, REFERENCE_MACHINE, HISTORY_BENCHMARK)
    assert len(history) > 1, f"{HISTORY_BENCHMARK} on {REFERENCE_MACHINE} has points for {len(history)} commit(s)"
    with _serve(html) as url:
        page = f"{url}/#{HISTORY_BENCHMARK}?machine={REFERENCE_MACHINE}"
        dom = subprocess.run([chromium, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
        subprocess.run([chromium, *flags, f"--screenshot={screenshot}", page], capture_output=True, timeout=120)
    assert HISTORY_BENCHMARK.split(".", 1)[1] in dom.stdout  # the benchmark list
    assert "flot-base" in dom.stdout or "<canvas" in dom.stdout  # a drawn graph
    assert screenshot.exists() and screenshot.stat().st_size > 10_000


REFERENCE_MACHINE = "cpu-2core"
HISTORY_BENCHMARK = "bench_training.SeedPolynomialFit.time_1000_steps"


def _graph_points(html: Path, machine: str, benchmark: str) -> set[int]:
    """The commits (revision numbers) with a measured value in the graph files asv publish wrote for a benchmark on
    a machine: what the dashboard plots."""
    import json

    revisions = set()
    for graph in html.glob(f"graphs/**/machine-{machine}/**/{benchmark}.json"):
        for revision, value in json.loads(graph.read_text()):
            values = value if isinstance(value, list) else [value]
            if any(v is not None for v in values):
                revisions.add(revision)
    return revisions


def test_the_reference_history_is_committed_for_many_commits():
    """asv_bench/results/cpu-2core holds the tracked set's results for more than one commit, each a commit of this
    repository."""
    results = [p for p in (ASV_DIR / "results" / REFERENCE_MACHINE).glob("*.json") if p.name != "machine.json"]
    commits = {p.name.split("-", 1)[0] for p in results}
    assert len(commits) > 5
    for commit in commits:
        check = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, capture_output=True)
        assert check.returncode == 0, f"results for {commit}, which is not a commit here"


def test_tracked_set_names_existing_benchmarks(benchmarks_package):
    """Every regex of the tracked set selects at least one benchmark of the suite (a renamed class would silently
    drop out of the history)."""
    import re

    tracked = _tracked()
    names = []
    for module in MODULES:
        loaded = importlib.import_module(f"benchmarks.{module}")
        for class_name, cls in inspect.getmembers(loaded, inspect.isclass):
            if cls.__module__ == loaded.__name__:
                names += [f"{module}.{class_name}.{m}" for m in dir(cls) if m.startswith(("time_", "track_"))]
    for pattern in tracked.TRACKED:
        assert any(re.search(pattern, name) for name in names), pattern


def _tracked():
    return _from_asv_dir("tracked")


def test_noise_factor_is_the_largest_ratio_between_two_runs():
    first = {"a": (["1", "2", "3"], [1.0, 2.0, None]), "b": ([""], [10.0]), "only-first": ([""], [1.0])}
    second = {"a": (["1", "2", "3"], [1.1, 1.0, 3.0]), "b": ([""], [12.0])}
    factor, per_benchmark = _tracked().noise_factor(first, second)
    assert per_benchmark == {"a": 2.0, "b": 1.2} and factor == 2.0


def test_the_comparison_says_worse_for_slower_times_and_for_lower_rates():
    """asv treats every value as lower-is-better; a speedup or GB/s that drops is a regression all the same."""
    tracked = _tracked()
    base = {"t.time_x": (["a"], [1.0]), "t.track_speedup": (["b"], [10.0]), "t.track_gbs": (["c"], [50.0])}
    head = {"t.time_x": (["a"], [2.0]), "t.track_speedup": (["b"], [4.0]), "t.track_gbs": (["c"], [100.0])}
    units = {"t.time_x": "seconds", "t.track_speedup": "x", "t.track_gbs": "GB/s"}
    rows = tracked.compare_results(base, head, units, factors={"t.track_gbs": 1.5}, default=1.3)
    verdicts = {name: (round(slowdown, 3), flag) for name, _, _, _, slowdown, flag in rows}
    assert verdicts == {"t.track_speedup": (2.5, "worse"), "t.time_x": (2.0, "worse"), "t.track_gbs": (0.5, "better")}
    quiet = tracked.compare_results(base, head, units, factors={"t.time_x": 3.0}, default=1.3)
    assert next(flag for name, *_, flag in quiet if name == "t.time_x") == ""  # within that benchmark's noise


def test_the_forge_workflows_run_commands_that_exist():
    """The workflow files parse, and the commands they run name the scripts and subcommands that exist here."""
    import yaml

    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {w.name for w in workflows} >= {"asv-history.yml", "asv-compare.yml"}
    subcommands = {"list", "history", "noise", "compare"}
    for workflow in workflows:
        parsed = yaml.safe_load(workflow.read_text())
        steps = [step for job in parsed["jobs"].values() for step in job.get("steps", [])]
        for step in steps:
            for line in step.get("run", "").splitlines():
                if "tracked.py" in line:
                    assert (ASV_DIR / "tracked.py").exists() and line.split("tracked.py")[1].split()[0] in subcommands
                if "vendor_dashboard.py" in line:
                    assert (ASV_DIR / "vendor_dashboard.py").exists()
                if "-c .ci/constraints.txt" in line:
                    assert (ROOT / ".ci" / "constraints.txt").exists()
