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
import json
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
        if "PYTHONPATH" in os.environ:  # asv drops PYTHONPATH in the benchmark processes; it keeps ASV_PYTHONPATH
            kwargs["env"] = {**os.environ, "ASV_PYTHONPATH": os.environ["PYTHONPATH"], **kwargs.get("env", {})}
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


def _asv_config(tmp_path: Path, *, reference: bool = True, plugins: bool = True) -> Path:
    """A copy of asv.conf.json whose results, html and environments are under tmp_path (never asv_bench/results):
    the suite's discovered benchmarks, and the committed reference history unless ``reference`` is false. asv runs
    from asv_bench/ all the same (its plugin is imported from there), each call with --config this file."""
    import json

    from asv import util

    conf = util.load_json(str(ASV_DIR / "asv.conf.json"), js_comments=True)
    results = tmp_path / "results"
    results.mkdir(parents=True)
    shutil.copy(ASV_DIR / "results" / "benchmarks.json", results)
    if reference:
        shutil.copytree(ASV_DIR / "results" / REFERENCE_MACHINE, results / REFERENCE_MACHINE)
    conf.update(
        repo=str(ROOT),
        benchmark_dir=str(ASV_DIR / "benchmarks"),
        env_dir=str(tmp_path / "env"),
        results_dir=str(results),
        html_dir=str(tmp_path / "html"),
    )
    if not plugins:
        conf["plugins"] = []
    path = tmp_path / "asv.conf.json"
    path.write_text(json.dumps(conf))
    return path


def _results_folder() -> set[str]:
    return {str(p.relative_to(ASV_DIR)) for p in (ASV_DIR / "results").rglob("*")}


@pytest.mark.slow
def test_quick_run_publishes_a_dashboard_that_renders(tmp_path):
    if importlib.util.find_spec("asv") is None:
        pytest.skip("asv not installed (pip install '.[test]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's chromium)")
    before = _results_folder()
    config = str(_asv_config(tmp_path / "asv"))
    _run(["asv", "check", "--config", config, "--python=same"])
    _run(["asv", "machine", "--yes", "--machine", "ci-quick"])
    _run(
        [
            "asv",
            "run",
            "--config",
            config,
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
    assert any((tmp_path / "asv" / "results" / "ci-quick").glob("*.json"))
    _run(["asv", "publish", "--config", config])
    assert _results_folder() == before, "the test wrote into asv_bench/results"
    html = tmp_path / "asv" / "html"
    assert (html / "index.html").exists()
    if shutil.which("npm") is None:
        pytest.skip("npm not installed: the dashboard's scripts cannot be vendored for an offline browser")
    _run([sys.executable, "vendor_dashboard.py", str(html)])  # asv's page loads its scripts from CDNs; serve them
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


def _synthetic_history(tmp_path: Path, series: dict[str, tuple[str, list[float]]], plugins: bool = True) -> Path:
    """A results folder with one benchmark per entry of ``series`` (name -> (unit, a value per commit)) measured on
    a machine "synthetic" at the oldest commits of main, plus one benchmark never measured; returns the config."""
    import json

    from asv import runner
    from asv.results import Results

    config = _asv_config(tmp_path, reference=False, plugins=plugins)
    results = tmp_path / "results"
    benchmarks = {"version": 2}
    for name, (unit, _) in {**series, "synthetic.Never.time_never": ("seconds", [])}.items():
        kind = "time" if ".time_" in name else "track"
        benchmarks[name] = {"name": name, "type": kind, "unit": unit, "params": [], "param_names": [], "version": "1"}
        benchmarks[name].update(code="", timeout=60)
    (results / "benchmarks.json").write_text(json.dumps(benchmarks))
    machine = {"machine": "synthetic", "arch": "x", "cpu": "x", "num_cpu": "1", "os": "x", "ram": "1GB"}
    (results / "synthetic").mkdir()
    (results / "synthetic" / "machine.json").write_text(json.dumps({**machine, "version": 1}))
    length = max(len(values) for _, values in series.values())
    log = ["git", "log", "--first-parent", "--reverse", "--format=%H %ct", "main"]
    commits = subprocess.run(log, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")[:length]
    for k, line in enumerate(commits):
        commit, date = line.split()
        measured = Results({**machine, "python": "3.11"}, {}, commit, int(date) * 1000, "3.11", "synthetic-env", {})
        for name, (_, values) in series.items():
            result = runner.BenchmarkResult(
                [values[k]], samples=[None], number=[None], errcode=0, stderr="", profile=None
            )
            measured.add_result(benchmarks[name], result, duration=1.0)
        measured.save(str(results))
    return config


def _regressions(html: Path) -> dict[str, tuple[float, float]]:
    import json

    entries = json.loads((html / "regressions.json").read_text())["regressions"]
    return {name: (last, best) for name, _, _, _, last, best, _ in entries}


def _feed(html: Path) -> dict[str, tuple[str, str]]:
    """The entries of the Atom feed asv publish wrote (regressions.xml): benchmark -> (title, summary)."""
    import xml.etree.ElementTree as ET

    atom = "{http://www.w3.org/2005/Atom}"
    entries = ET.parse(html / "regressions.xml").getroot().iter(f"{atom}entry")
    found = {}
    for entry in entries:
        title = entry.findtext(f"{atom}title")
        found[title.split(" ", 1)[1]] = (title, entry.findtext(f"{atom}content"))
    return found


STEADY, HIGHER, LOWER = [10.0] * 6, [20.0] * 6, [4.0] * 6
SYNTHETIC = {
    "synthetic.Rises.track_speedup": ("x", STEADY + HIGHER),  # an improvement
    "synthetic.Drops.track_speedup": ("x", STEADY + LOWER),  # a regression
    "synthetic.Rises.track_gbytes_per_second": ("GB/s", STEADY + HIGHER),  # an improvement
    "synthetic.Drops.track_gbytes_per_second": ("GB/s", STEADY + LOWER),  # a regression
    "synthetic.Slower.time_step": ("seconds", STEADY + HIGHER),  # a regression, as asv sees it anyway
    "synthetic.Cost.track_ratio": ("x", STEADY + HIGHER),  # a cost ratio (unit "x" too): higher is worse
}


@pytest.mark.slow
def test_the_published_regressions_are_drops_of_rates_and_speedups_and_rises_of_times(tmp_path):
    """asv publish (with publish_plugin) lists a speedup's or GB/s's drop on the Regressions page, never its rise,
    and its Atom feed words it as a regression of positive size; times and cost ratios keep asv's direction; the
    list's and the page's scripts read the direction from index.json, and a benchmark without data is left out.
    Without the plugin, asv gets the rates backwards (what the plugin fixes)."""
    import json
    import re

    if importlib.util.find_spec("asv") is None:
        pytest.skip("asv not installed (pip install '.[test]')")
    _run(["asv", "publish", "--config", str(_synthetic_history(tmp_path / "fixed", SYNTHETIC))])
    regressions = _regressions(tmp_path / "fixed" / "html")
    assert set(regressions) == {
        "synthetic.Drops.track_speedup",
        "synthetic.Drops.track_gbytes_per_second",
        "synthetic.Slower.time_step",
        "synthetic.Cost.track_ratio",
    }
    assert regressions["synthetic.Drops.track_speedup"] == pytest.approx((4.0, 10.0))  # last, best: the real values
    index = json.loads((tmp_path / "fixed" / "html" / "index.json").read_text())
    upward = {name for name, entry in index["benchmarks"].items() if entry["higher_is_better"]}
    assert upward == {name for name in SYNTHETIC if ".Rises.track" in name or ".Drops.track" in name}
    assert "synthetic.Never.time_never" not in index["benchmarks"]
    for script in ("regressions.js", "summarylist.js"):
        assert "higher_is_better" in (tmp_path / "fixed" / "html" / script).read_text()
    # the Atom feed: a speedup or GB/s falling from 10 to 4 is a 60% regression, as a time rising 10 -> 20 is 100%
    feed = _feed(tmp_path / "fixed" / "html")
    assert set(feed) == set(regressions)
    for name in ("synthetic.Drops.track_speedup", "synthetic.Drops.track_gbytes_per_second"):
        title, summary = feed[name]
        assert title == f"60.00% {name}"
        assert ">60.00% regression</a> (a drop: higher is better)" in summary
        assert re.search(r"\(60\.00% worse\s+than best value 10", summary) and "-60" not in summary
        new, old = re.search(r"New value: (.*?), old value: (.*?)\.<br>", summary).groups()
        assert new.startswith("4") and old.startswith("10")  # after the drop, before it
    title, summary = feed["synthetic.Slower.time_step"]  # asv's own wording, left as it was
    assert title == "100.00% synthetic.Slower.time_step" and "(100.00% worse" in summary
    assert "higher is better" not in summary

    _run(["asv", "publish", "--config", str(_synthetic_history(tmp_path / "asv-only", SYNTHETIC, plugins=False))])
    assert {"synthetic.Rises.track_speedup", "synthetic.Rises.track_gbytes_per_second"} <= set(
        _regressions(tmp_path / "asv-only" / "html")
    )
    assert "synthetic.Drops.track_speedup" not in _regressions(tmp_path / "asv-only" / "html")


def test_higher_is_better_is_rates_and_speedups_only():
    tracked = _tracked()
    publish_plugin = _from_asv_dir("publish_plugin")
    assert publish_plugin.higher_is_better("bench_ops.Speedup.track_speedup", "x")
    assert publish_plugin.higher_is_better("bench_ops.Speedup.track_speedup('dot', 'numpy')", "x")
    assert publish_plugin.higher_is_better("bench_ops.Bandwidth.track_gbytes_per_second", "GB/s")
    assert publish_plugin.higher_is_better("bench_training.FractionOfLimit.track_fraction_of_limit", "fraction")
    for name, unit in [
        ("bench_training.GramManyPoints.track_fit_over_poly_mse_calls", "x"),
        ("bench_overhead.RatioToEmptyFunction.track_ratio", "x"),
        ("bench_training.FusedFitRecording.track_recording_cost", "x"),
        ("bench_training.BatchedFits.track_ns_per_series_step", "ns"),
        ("bench_ops.Dot.time_call", "seconds"),
    ]:
        assert not publish_plugin.higher_is_better(name, unit), name
    # compare reads the same direction: a cost ratio that doubles is 2x worse
    rows = tracked.compare_results(
        {"g.track_fit_over_poly_mse_calls": ([""], [1.0])},
        {"g.track_fit_over_poly_mse_calls": ([""], [2.0])},
        {"g.track_fit_over_poly_mse_calls": "x"},
        factors={},
        default=1.3,
    )
    assert [(slowdown, flag) for *_, slowdown, flag in rows] == [(2.0, "worse")]


def test_outliers_are_points_beyond_the_noise_of_both_neighbours():
    find = _tracked().find_outliers
    commits = [f"c{k}" for k in range(7)]

    def series(*values):
        return list(zip(commits, values, strict=False))

    assert find(series(100, 110, 95, 54_902, 105, 98, 101), 1.5) == [("c3", 54_902, 95, 105)]  # a spike
    assert find(series(100, 110, 9, 105, 98), 1.5) == [("c2", 9, 110, 105)]  # a dip
    assert find(series(100, 110, 95, 300, 290, 310), 1.5) == []  # a step the next commits share: real
    assert find(series(100, 140, 100), 1.5) == []  # within the noise
    assert find(series(100, 200, 110), 1.5) == [("c1", 200, 100, 110)]
    assert find(series(100, 100, 200, 500, 500), 1.5) == []  # a rise over two commits: not a spike
    assert find(series(100, 1000, 100, 5000, 100), 1.5) == [("c1", 1000, 100, 100), ("c3", 5000, 100, 100)]
    assert find(series(100, None, 98, 54_902, None, 101), 1.5) == [("c3", 54_902, 98, 101)]  # unmeasured skipped
    assert find(series(100, 54_902), 1.5) == []  # two points: no one to judge by


def test_an_end_point_off_the_series_is_to_be_measured_again_never_an_outlier():
    """The newest commit's value off the steady series before it may be a new level (a regression): it is an end
    point, not an outlier; so is the oldest's."""
    judge = _tracked().judge_series
    newest = judge([("a", 1.0), ("b", 1.02), ("c", 0.99), ("d", 1.01), ("e", 2.0)], 1.3)
    assert newest.outliers == [] and newest.noisy == [] and newest.ends == [("e", 2.0, 1.01, 0.99)]
    oldest = judge([("a", 54_902), ("b", 98), ("c", 102)], 1.5)
    assert oldest.outliers == [] and oldest.ends == [("a", 54_902, 98, 102)]
    assert judge([("a", 1.0), ("b", 1.1), ("c", 0.95), ("d", 1.2)], 1.3) == ([], [], [])  # within the noise


def test_a_series_flipping_between_levels_is_noisy_not_outliers():
    """A bimodal series (the GB/s of cpu-2core's history, ~10 or ~36): two neighbouring points each off the other
    are a flip, not two accidents; a level the series returns to further on is one of its levels; a point in a
    stretch that varies beyond the noise cannot be singled out. All are reported noisy, none as outliers."""
    judge = _tracked().judge_series
    factor = 1.2 * 1.654  # Bandwidth's, from noise.json
    bimodal = [36.9, 36.6, 37.6, 39.2, 35.8, 25.3, 10.4, 36.6, 10.4]  # Bandwidth('poly_mse', numba) from 0bdcd998
    verdict = judge([(f"c{k}", value) for k, value in enumerate(bimodal)], factor)
    assert verdict.outliers == [] and [point.commit for point in verdict.noisy] == ["c6", "c7"]
    returns = [29.1, 38.5, 38.6, 10.6, 30.5, 60.9, 34.5, 40.8, 29.2, 10.5, 47.0, 40.0]  # the low level, twice
    verdict = judge([(f"c{k}", value) for k, value in enumerate(returns)], factor)
    assert verdict.outliers == [] and {"c3", "c9"} <= {point.commit for point in verdict.noisy}
    uneven = [100, 170, 160, 100, 600, 100, 60, 65, 100]  # around 600: 60 to 170, beyond 1.5 of their median
    verdict = judge([(f"c{k}", value) for k, value in enumerate(uneven)], 1.5)
    assert verdict.outliers == [] and "c4" in {point.commit for point in verdict.noisy}
    # the same spike where the series around it is steady: an outlier
    steady = [100, 110, 105, 100, 600, 100, 95, 100, 100]
    assert judge([(f"c{k}", value) for k, value in enumerate(steady)], 1.5) == ([("c4", 600, 100, 100)], [], [])


def test_outliers_are_dropped_from_a_results_file_and_only_they(tmp_path):
    """tracked.py outliers --drop sets one parameter combination of one commit's file to null, nothing else."""
    import json

    tracked = _tracked()
    source = next(p for p in (ASV_DIR / "results" / REFERENCE_MACHINE).glob("cda41320-*.json"))
    (tmp_path / REFERENCE_MACHINE).mkdir()
    copy = tmp_path / REFERENCE_MACHINE / source.name
    shutil.copy(source, copy)
    name = "bench_training.BatchedFits.track_ns_per_series_step"
    before = json.loads(copy.read_text())
    point = (name, "'fit_poly batched (cpp)'", before["commit_hash"])
    assert tracked.drop_points(REFERENCE_MACHINE, [point], results_dir=tmp_path) == 1
    after = json.loads(copy.read_text())
    assert after["results"][name][0][2] is None
    after["results"][name][0][2] = before["results"][name][0][2]
    assert after == before


def test_the_history_since_the_last_measured_commit_starts_at_the_newest_result():
    tracked = _tracked()
    order = tracked._commit_order()
    newest = max(tracked._machine_results(REFERENCE_MACHINE), key=order.__getitem__)
    assert tracked.history_range(REFERENCE_MACHINE, True, "main") == f"{newest}..main"
    assert tracked.history_range(REFERENCE_MACHINE, True, "abc..HEAD") == f"{newest}..HEAD"
    assert tracked.history_range(REFERENCE_MACHINE, False, "abc..HEAD") == "abc..HEAD"


def test_results_of_other_machines_are_not_committed():
    """Only the reference machines' results are tracked by git: a local run's (ci-quick, compare, aa-first) is
    ignored, so neither a commit nor a deployed dashboard carries it."""
    for path in ("asv_bench/results/ci-quick/abc.json", "asv_bench/results/compare/machine.json", "asv_bench/html/x"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert ignored.returncode == 0, path
    tracked = subprocess.run(["git", "ls-files", "asv_bench/results"], cwd=ROOT, capture_output=True, text=True)
    machines = {Path(p).parts[2] for p in tracked.stdout.split() if len(Path(p).parts) > 3}
    assert machines == set(_tracked().REFERENCE_MACHINES)


def test_history_refuses_to_add_another_cpus_results_to_a_machine(tmp_path):
    """The committed history's CPU is in its machine.json: results measured on another CPU would be drawn as the
    same machine's, so history refuses them (another name per CPU)."""
    tracked = _tracked()
    (tmp_path / "vm").mkdir()
    recorded = {"machine": "vm", "cpu": "AMD EPYC (Zen 5, AVX-512), 2 logical CPUs", "num_cpu": "2", "version": 1}
    (tmp_path / "vm" / "machine.json").write_text(json.dumps(recorded))
    same = {"cpu": recorded["cpu"], "num_cpu": "2"}
    assert tracked.hardware_mismatch("vm", same, tmp_path) is None
    assert tracked.hardware_mismatch("new", {"cpu": "Intel(R) Xeon(R)", "num_cpu": "2"}, tmp_path) is None
    message = tracked.hardware_mismatch(
        "vm", {"cpu": "Intel(R) Xeon(R) Processor, 2 logical CPUs", "num_cpu": "2"}, tmp_path
    )
    assert message and "AMD EPYC" in message and "Intel" in message and "--machine" in message
    assert "num_cpu" in tracked.hardware_mismatch("vm", {"cpu": recorded["cpu"], "num_cpu": "4"}, tmp_path)


def test_each_committed_machine_s_results_come_from_its_one_cpu():
    """Every committed result file records the CPU of its folder's machine.json."""
    for machine in _tracked().REFERENCE_MACHINES:
        folder = ASV_DIR / "results" / machine
        cpu = json.loads((folder / "machine.json").read_text())["cpu"]
        for path in folder.glob("*.json"):
            if path.name != "machine.json":
                params = json.loads(path.read_text())["params"]
                assert (params["machine"], params["cpu"]) == (machine, cpu), path.name


def _run_history(monkeypatch, tmp_path, tracked, asv, commits, series: dict, steps: int | None) -> None:
    """``tracked.py history --since-last --machine m`` with asv replaced by ``asv`` and the results by ``series``
    (benchmark name -> {commit: value}, updated in place by the fake asv)."""
    import argparse

    monkeypatch.setattr(tracked, "_asv", asv)
    monkeypatch.setattr(tracked, "describe_machine", lambda machine: None)
    monkeypatch.setattr(tracked, "_commit_order", lambda: {c: k for k, c in enumerate(commits)})
    monkeypatch.setattr(tracked, "_noise_factors", lambda: ({}, 1.3))

    def results(machine):
        found: dict = {}
        for name, values in series.items():
            for commit, value in values.items():
                found.setdefault(commit, {})[name] = ([""], [value])
        return found

    monkeypatch.setattr(tracked, "_machine_results", results)
    monkeypatch.setattr(tracked, "HERE", tmp_path)
    (tmp_path / "results").mkdir()
    args = argparse.Namespace(
        machine="m", steps=steps, since_last=True, range="main", no_remeasure=False, same_hardware=True
    )
    assert tracked.command_history(args) == 0


def test_history_measures_again_the_outliers_among_the_new_commits(monkeypatch, tmp_path, capsys):
    """After its asv run, history re-runs the outlying benchmark at a new commit (asv run -b that benchmark, the
    commit in a hash file), and only lists an old outlier that no new commit neighbours."""

    tracked = _tracked()
    name = "b.Fits.time_fit"
    commits = [str(k) * 40 for k in range(5)]
    values = {commits[0]: 100.0, commits[1]: 1000.0, commits[2]: 100.0}  # c1: an old outlier
    calls = []

    def asv(*args, check=True):
        calls.append(args)
        if "--skip-existing-successful" in args:  # the history run: two new commits, the first a spike
            values.update({commits[3]: 5000.0, commits[4]: 100.0})
        else:  # the re-measure
            hashes = Path(args[-1].removeprefix("HASHFILE:")).read_text().split()
            values.update(dict.fromkeys(hashes, 101.0))

    _run_history(monkeypatch, tmp_path, tracked, asv, commits, {name: values}, steps=5)
    assert calls[0][-1] == f"{commits[2]}..main" and "--steps" in calls[0]
    assert (
        len(calls) == 2 and calls[1][:4] == ("run", "--machine", "m", "-b") and calls[1][4] == "^b\\.Fits\\.time_fit$"
    )
    assert values[commits[3]] == 101.0 and values[commits[1]] == 1000.0  # the new one measured again, the old not
    measured_again, listed = capsys.readouterr().out.split("check them before committing")
    assert f"{commits[3][:8]}  {name}" in measured_again and commits[1][:8] not in measured_again
    assert f"{commits[1][:8]}  {name}" in listed and commits[3][:8] not in listed


def test_history_measures_the_newest_commit_again_and_keeps_the_new_value(monkeypatch, tmp_path, capsys):
    """A newest commit off the steady series before it (a regression, or a spike) is measured again once, never
    dropped: the value measured again stays in the results and is listed as an end point, not as an outlier."""

    tracked = _tracked()
    name = "b.Fits.time_fit"
    commits = [str(k) * 40 for k in range(5)]
    values = dict(zip(commits[:4], [1.0, 1.02, 0.99, 1.01], strict=True))
    calls = []

    def asv(*args, check=True):
        calls.append(args)
        if "--skip-existing-successful" in args:
            values[commits[4]] = 2.0
        else:  # measured again: the regression is real
            values.update(dict.fromkeys(Path(args[-1].removeprefix("HASHFILE:")).read_text().split(), 1.98))

    _run_history(monkeypatch, tmp_path, tracked, asv, commits, {name: values}, steps=None)
    assert len(calls) == 2 and Path(calls[1][-1].removeprefix("HASHFILE:")).read_text() == f"{commits[4]}\n"
    assert values[commits[4]] == 1.98
    listed = capsys.readouterr().out.split("check them before committing")[1]
    assert f"{commits[4][:8]}  {name}(): 1.98 off 1.01 and 0.99 beside it: an end point" in listed


def _parametrized_history(folder: Path, name: str, series: dict[str, list[float | None]], params_at) -> list[str]:
    """Result files of one parametrized benchmark on machine "m" under ``folder``: ``series`` maps a parameter
    label to its value per commit (None: that commit lacks the label), ``params_at(k)`` is commit k's parameter
    list. Returns the (fake) commits, oldest first."""
    from asv import runner
    from asv.results import Results

    machine = {"machine": "m", "arch": "x", "cpu": "x", "num_cpu": "1", "os": "x", "ram": "1GB"}
    (folder / "m").mkdir(parents=True)
    (folder / "m" / "machine.json").write_text(json.dumps({**machine, "version": 1}))
    length = len(next(iter(series.values())))
    commits = [f"{k:02d}" * 20 for k in range(length)]
    for k, commit in enumerate(commits):
        params = params_at(k)
        benchmark = {"name": name, "type": "time", "unit": "seconds", "params": [params], "param_names": ["impl"]}
        benchmark.update(version="1", code="", timeout=60)
        values = [series[label][k] for label in params]
        measured = Results({**machine, "python": "3.11"}, {}, commit, 1_700_000_000_000 + k, "3.11", "env", {})
        result = runner.BenchmarkResult(
            values, samples=[None] * len(values), number=[None] * len(values), errcode=0, stderr="", profile=None
        )
        measured.add_result(benchmark, result, duration=1.0)
        measured.save(str(folder))
    return commits


def test_outliers_follow_each_parameter_by_its_label_and_drop_only_outliers(monkeypatch, tmp_path, capsys):
    """A benchmark whose parameters change over the history ('a' and 'b', then 'b' and 'c': 'b' moves from the second
    place to the first) is judged per label; outliers --drop nulls the outliers at their label's place in each file
    and leaves the newest commit's end point alone."""
    tracked = _tracked()
    name = "b.P.time_x"
    series = {
        "'a'": [1.0, 1.0, 1.0, None, None, None, None, None],
        "'b'": [1.0, 10.0, 1.0, 1.0, 1.0, 1.0, 1.0, 20.0],  # a spike at commit 1, the newest off the series
        "'c'": [None, None, None, 5.0, 5.0, 50.0, 5.0, 5.0],  # a spike at commit 5
    }
    commits = _parametrized_history(
        tmp_path / "results", name, series, lambda k: ["'a'", "'b'"] if k < 3 else ["'b'", "'c'"]
    )
    monkeypatch.setattr(tracked, "HERE", tmp_path)
    monkeypatch.setattr(tracked, "_commit_order", lambda: {c: k for k, c in enumerate(commits)})
    monkeypatch.setattr(tracked, "_noise_factors", lambda: ({}, 1.3))
    rows = {(row.params, row.commit, row.kind) for row in tracked.machine_outliers("m")}
    assert rows == {("'b'", commits[1], "outlier"), ("'c'", commits[5], "outlier"), ("'b'", commits[7], "end")}
    before = {path.name: json.loads(path.read_text()) for path in (tmp_path / "results" / "m").glob("0*.json")}
    assert tracked.main(["outliers", "--machine", "m", "--drop"]) == 0
    assert "dropped 2 outlier(s)" in capsys.readouterr().out
    recorded = tracked._machine_results("m")
    assert recorded[commits[1]][name] == (["'a'", "'b'"], [1.0, None])
    assert recorded[commits[5]][name] == (["'b'", "'c'"], [1.0, None])
    assert recorded[commits[7]][name] == (["'b'", "'c'"], [20.0, 5.0])  # the end point: kept
    changed = {
        path.name
        for path in (tmp_path / "results" / "m").glob("0*.json")
        if json.loads(path.read_text()) != before[path.name]
    }
    assert changed == {f"{commits[1][:8]}-env.json", f"{commits[5][:8]}-env.json"}


def test_fused_fits_measures_each_tree_side_by_side():
    """asv_bench/fused_fits.py, issue 27's before/after script: every row (seed fits by method and dtype, the numba
    yardstick, batched fits freed and kept) gets a time and page faults per call for each tree (one round; this
    checkout given twice)."""
    out = _run([sys.executable, "fused_fits.py", "--rounds", "1", "--tree", str(ROOT), "--tree", str(ROOT)])
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "ns |" not in line]
    names = [cells[0].strip() for cells in rows]
    assert len(names) == 13 and len(set(names)) == 13
    assert sum("batched" in name for name in names) == 6 and sum("method=auto" in name for name in names) == 4
    for cells in rows:
        ns, faults = [float(c) for c in cells[1::2]], [float(c) for c in cells[2::2]]
        assert len(ns) == len(faults) == 2 and all(0 < t < 1000 for t in ns) and all(f >= 0 for f in faults)
