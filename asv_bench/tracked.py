"""The tracked set: the benchmarks that tell pykernels' story, run over the project's history and on every change.

Run from ``asv_bench/`` with asv installed (``pip install '.[test]'``)::

    python tracked.py list                                  # the tracked benchmarks (regexes passed to asv -b)
    python tracked.py history --machine NAME --steps 12 main  # asv run over commits, each built in its own env
    python tracked.py noise --write                         # A/A: the installed code measured twice -> noise.json
    python tracked.py compare [BASE] [HEAD]                 # both commits built and run; the changes, flagged

``compare``'s BASE defaults to the newest commit of the committed reference histories (``REFERENCE_MACHINES``) that is
an ancestor of HEAD: the last landed main whose results were recorded. Both commits are built and their benchmark
rounds interleaved (asv --interleave-rounds), so the machine's drift over the run falls on both. It prints every
tracked measurement's slowdown (head over base for times, base over head for rates and speedups, so > 1 is always
worse) and flags those beyond the benchmark's A/A noise. It reports; it never fails on a slowdown (shared machines
are noisy), only when it could not compare.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from publish_plugin import higher_is_better  # asv takes every value as lower-is-better; rates and speedups are not

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REFERENCE_MACHINE = "cpu-2core"  # the first reference machine: a 2-core AMD EPYC (Zen 5) VM
# Every machine whose results are committed under results/ (un-ignored in .gitignore): the project's 2-core VMs,
# one name per CPU they ran on (asv never compares across machines, so a new CPU starts a history of its own).
REFERENCE_MACHINES = (REFERENCE_MACHINE, "xeon-2core")
NOISE_FILE = HERE / "noise.json"
DEFAULT_FACTOR = 1.3  # the smallest change flagged, whatever the A/A noise

# Each entry: an asv -b regex and what it shows. Small enough to run in a few minutes per commit on 2 cores.
TRACKED = {
    r"^bench_training\.SeedPolynomialFit\.time_1000_steps": "the seed fit, per implementation (write-up rows too)",
    r"^bench_training\.BatchedFits\.track_ns_per_series_step": "batched fits, ns per series x step",
    r"^bench_training\.LargeProblemEpoch\.time_epoch": "the 10^7-weight problem's training step",
    r"^bench_training\.LargeProblemInKernelSpeedup\.track_speedup": "in-kernel-sample epoch over the write-up's",
    r"^bench_ops\.Speedup\.track_speedup": "poly_mse and dot over NumPy and torch, side by side",
    r"^bench_ops\.Bandwidth\.track_gbytes_per_second": "GB/s of the bandwidth-bound ops at 10^7 float32",
    r"^bench_training\.SeedFitMethods\.track_ns_per_step": "the seed fit by fit_poly, on the data or its statistics",
    r"^bench_training\.GramManyPoints\.track_fit_over_poly_mse_calls": "a gram fit of 10^6 points / 20 poly_mse",
    r"^bench_training\.BatchedGramFits\.track_ns_per_series_step": "batched fits on the statistics, ns",
    r"^bench_training\.FractionOfLimit\.track_fraction_of_limit": "each fused row's fraction of the machine's limit",
}


def _bench_args() -> list[str]:
    return [arg for pattern in TRACKED for arg in ("-b", pattern)]


def _asv(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """asv of this interpreter, run in this folder, with pip held to the project's constraints (asv's environments
    install torch and friends with pip: unconstrained, they would pull other builds than CI's)."""
    env = {**os.environ, "PIP_CONSTRAINT": str(REPO / ".ci" / "constraints.txt")}
    print("+ asv " + " ".join(args), flush=True)
    return subprocess.run([sys.executable, "-m", "asv", *args], cwd=HERE, env=env, check=check)


def machine_facts(name: str) -> dict[str, str]:
    """What asv records about a machine (its results are only comparable with the same machine's)."""
    import platform

    cpu = platform.processor() or platform.machine()
    memory_gb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = round(int(line.split()[1]) / 2**20)
    return {
        "machine": name,
        "arch": platform.machine(),
        "cpu": f"{cpu}, {os.cpu_count()} logical CPUs",
        "num_cpu": str(os.cpu_count()),
        "os": f"{platform.system()} {platform.release()}",
        "ram": f"{memory_gb}GB",
    }


def hardware_mismatch(name: str, here: dict[str, str], results_dir: Path | None = None) -> str | None:
    """Why this machine (``here``, :func:`machine_facts`) may not add results under ``name``: the CPU or the number
    of CPUs recorded in the results' own machine.json differ. None where they agree, or where none is recorded."""
    recorded_path = (results_dir or HERE / "results") / name / "machine.json"
    try:
        recorded = json.loads(recorded_path.read_text())
    except (OSError, ValueError):
        return None
    for key in ("cpu", "num_cpu"):
        if recorded.get(key) and recorded[key] != here[key]:
            return (
                f"the results under {name!r} were measured on {key} {recorded[key]!r}, this machine has "
                f"{here[key]!r}: asv would draw both as one machine's history. Use another --machine name (one per "
                "CPU; add it to REFERENCE_MACHINES and un-ignore its folder to commit it), or --same-hardware where "
                "only the description differs"
            )
    return None


def describe_machine(name: str) -> None:
    """Record the machine in ~/.asv-machine.json unless it is described there already (asv machine --yes records
    only the name when it is given one)."""
    path = Path.home() / ".asv-machine.json"
    try:
        machines = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or not asv's format: start it anew
        machines = {"version": 1}
    if machines.get(name, {}).get("cpu"):
        return
    machines[name] = machine_facts(name)
    path.write_text(json.dumps(machines, indent=4))


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def _result_files(folder: Path) -> list[Path]:
    """A machine folder's result files (one per commit and environment), less its machine.json."""
    return [path for path in sorted(folder.glob("*.json")) if path.name != "machine.json"]


def _param_labels(params: list[list]) -> list[str]:
    """One label per parameter combination, in asv's order ("'dot', 'cpu'"; "" for a benchmark without any)."""
    import itertools

    return [", ".join(map(str, combination)) for combination in itertools.product(*params)] or [""]


def _machine_results(machine: str) -> dict[str, dict[str, tuple[list[str], list]]]:
    """commit hash -> {benchmark name -> (a label per parameter combination, the values)} of one machine."""
    from asv.results import Results

    found: dict[str, dict[str, tuple[list[str], list]]] = {}
    for path in _result_files(HERE / "results" / machine):
        results = Results.load(str(path), machine)
        measured = found.setdefault(results.commit_hash, {})
        for key in results.get_all_result_keys():
            params = results.get_result_params(key)
            measured[key] = (_param_labels(params), results.get_result_value(key, params))
    return found


def _number(value) -> float | None:
    measured = isinstance(value, (int, float)) and not isinstance(value, bool)
    return value if measured and math.isfinite(value) and value > 0 else None


def noise_factor(first: dict[str, tuple], second: dict[str, tuple]) -> tuple[float, dict[str, float]]:
    """The largest ratio (slower over faster) between two runs of the same code, over every tracked measurement both
    runs have; and each benchmark's largest ratio."""
    per_benchmark: dict[str, float] = {}
    for name in sorted(first.keys() & second.keys()):
        pairs = zip(first[name][1], second[name][1], strict=False)
        ratios = [max(a, b) / min(a, b) for a, b in pairs if _number(a) and _number(b)]
        if ratios:
            per_benchmark[name] = max(ratios)
    return (max(per_benchmark.values()) if per_benchmark else math.nan), per_benchmark


def command_noise(args: argparse.Namespace) -> int:
    """A/A: the tracked set twice on the installed code (asv --python=same), recorded under two machine names."""
    head = _git("rev-parse", "HEAD")
    runs = []
    for label in ("aa-first", "aa-second"):
        describe_machine(label)
        _asv("run", "--python=same", "--set-commit-hash", head, "--machine", label, *_bench_args(), check=False)
        recorded = _machine_results(label).get(head)
        if not recorded:
            print(f"tracked: the {label} run recorded no results")
            return 2
        runs.append(recorded)
    factor, per_benchmark = noise_factor(*runs)
    report = {
        "commit": head,
        "factor": round(factor, 3),
        "load_average_after": os.getloadavg(),
        "per_benchmark": {name: round(value, 3) for name, value in per_benchmark.items()},
    }
    print(json.dumps(report, indent=1))
    if args.write:
        NOISE_FILE.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _noise_factors() -> tuple[dict[str, float], float]:
    """Each benchmark's flagging factor (1.2x its A/A noise in noise.json), and the factor for those it lacks."""
    noise = json.loads(NOISE_FILE.read_text()) if NOISE_FILE.exists() else {}
    factors = {name: 1.2 * value for name, value in noise.get("per_benchmark", {}).items()}
    return factors, noise.get("factor", DEFAULT_FACTOR)


WINDOW = 3  # measured points each side that say whether the series around a point is steady


class Suspect(NamedTuple):
    """A point off both its measured neighbours (for the first and the last point: off the two nearest)."""

    commit: str
    value: float
    before: float
    after: float


class Verdict(NamedTuple):
    """What :func:`judge_series` makes of a series' suspects."""

    outliers: list[Suspect]  # lone spikes and dips in a steady series: measurement accidents, safe to drop
    ends: list[Suspect]  # the oldest or newest point off a steady series: a new level or a spike, to measure again
    noisy: list[Suspect]  # off both neighbours where the series itself varies beyond its noise: neither


def _centre_and_spread(values: list[float]) -> tuple[float, float]:
    """The median of some positive values (on a log scale: an even count's median is the geometric mean of the middle
    two, so ratios up and down weigh the same) and the largest ratio of a value to it."""
    centre = math.exp(statistics.median(math.log(value) for value in values))
    return centre, max(max(value / centre, centre / value) for value in values)


def judge_series(series: list[tuple[str, float | None]], factor: float) -> Verdict:
    """Sort the suspects of one series (commit, value; in commit order; unmeasured points skipped) into outliers,
    end points and noise.

    A point is a suspect when it is beyond ``factor`` (the benchmark's noise) of both its neighbours, in the same
    direction, and the neighbours agree with each other within ``factor`` (the first and the last point: their two
    nearest). A suspect is an outlier only when the series around it is steady and it is not:

    * its value does not recur: no measured point up to ``WINDOW`` each side, and no other suspect anywhere in the
      series, comes within ``factor`` of it (a level the series keeps returning to, as a bimodal benchmark's low
      mode, is not a one-off accident; two suspects side by side are such a flip too);
    * the points up to ``WINDOW`` each side that are not suspects lie within ``factor`` of their median (a series
      that varies more than its noise there cannot single a point out; other suspects are left out, so two spikes a
      few commits apart are both found), and the point is beyond ``factor`` of that median.

    A suspect that fails either is noise: dropping it would delete one of the series' levels. The first and the
    last point are judged the same way, on their one side, but are never outliers: the newest point off the steady
    series before it may be a real regression, to be measured again, not dropped."""
    measured = [(commit, value) for commit, value in series if _number(value)]
    verdict = Verdict([], [], [])
    if len(measured) < 3:
        return verdict
    values = [value for _, value in measured]
    last = len(values) - 1

    def neighbours(k: int) -> tuple[float, float]:
        if k == 0:
            return values[1], values[2]
        if k == last:
            return values[k - 1], values[k - 2]
        return values[k - 1], values[k + 1]

    def suspect(k: int) -> bool:
        around = neighbours(k)
        ratios = [values[k] / other for other in around]
        agree = max(around) / min(around) <= factor
        return agree and (all(r > factor for r in ratios) or all(r < 1 / factor for r in ratios))

    suspects = {k for k in range(len(values)) if suspect(k)}
    for k in sorted(suspects):
        nearby = [j for j in range(max(0, k - WINDOW), min(len(values), k + WINDOW + 1)) if j != k]
        recurs = any(max(values[j] / values[k], values[k] / values[j]) <= factor for j in {*nearby, *suspects} - {k})
        others = [values[j] for j in nearby if j not in suspects]
        point = Suspect(measured[k][0], values[k], *neighbours(k))
        if recurs or not others:  # (no others: every point nearby is a suspect, the series alternating)
            verdict.noisy.append(point)
            continue
        centre, spread = _centre_and_spread(others)
        if spread > factor or max(values[k] / centre, centre / values[k]) <= factor:
            verdict.noisy.append(point)
        elif k in (0, last):
            verdict.ends.append(point)
        else:
            verdict.outliers.append(point)
    return verdict


def find_outliers(series: list[tuple[str, float | None]], factor: float) -> list[Suspect]:
    """The outliers of one series (:func:`judge_series`): the points that ``tracked.py outliers --drop`` may drop."""
    return judge_series(series, factor).outliers


class Row(NamedTuple):
    """A suspect point of a machine's results: ``kind`` is "outlier", "end" or "noisy" (:class:`Verdict`)."""

    benchmark: str
    params: str
    commit: str
    value: float
    before: float
    after: float
    kind: str


def outlier_size(row: Row) -> float:
    """How far a suspect is from the nearer of its two neighbours (a ratio, above 1)."""
    return min(max(row.value / other, other / row.value) for other in (row.before, row.after))


def _commit_order() -> dict[str, int]:
    """Each commit's position in the repository's history, oldest first (the order of asv's graphs)."""
    commits = _git("rev-list", "--topo-order", "--reverse", "--all").splitlines()
    return {commit: position for position, commit in enumerate(commits)}


def machine_outliers(machine: str) -> list[Row]:
    """Every suspect point (:func:`judge_series`) in a machine's results, each benchmark judged by its own noise
    factor (1.2x its A/A noise, never below DEFAULT_FACTOR). A series is one parameter combination, matched by its
    label at each commit: a benchmark whose parameters changed over the history has a series per label, measured
    at the commits that had it."""
    recorded = _machine_results(machine)
    order = _commit_order()
    commits = sorted(recorded, key=lambda commit: order.get(commit, len(order)))
    factors, overall = _noise_factors()
    rows = []
    for name in sorted({name for measured in recorded.values() for name in measured}):
        factor = max(DEFAULT_FACTOR, factors.get(name, overall))
        at = {
            commit: dict(zip(*recorded[commit][name], strict=False)) for commit in commits if name in recorded[commit]
        }
        labels = list(dict.fromkeys(label for values in at.values() for label in values))  # first seen, first
        for label in labels:
            verdict = judge_series([(commit, at.get(commit, {}).get(label)) for commit in commits], factor)
            for kind, points in zip(("outlier", "end", "noisy"), verdict, strict=True):
                rows += [Row(name, label, *point, kind) for point in points]
    return rows


def drop_points(machine: str, points: list[tuple[str, str, str]], results_dir: Path | None = None) -> int:
    """Set the (benchmark, parameters, commit) points of a machine's result files to "not measured" (null, as asv
    records a failed parameter combination); returns how many were dropped."""
    from asv.results import Results

    dropped = 0
    results_dir = results_dir or HERE / "results"
    for path in _result_files(results_dir / machine):
        results = Results.load(str(path), machine)
        changed = False
        for name, label, commit in points:
            if commit != results.commit_hash or name not in results.get_all_result_keys():
                continue
            labels = _param_labels(results.get_result_params(name))
            if label not in labels:  # the benchmark had other parameters at this commit
                continue
            k = labels.index(label)
            results._results[name][k] = None  # (asv has no public call to drop one parameter combination)
            if results._stats.get(name):
                results._stats[name][k] = None
            if results._samples.get(name):
                results._samples[name][k] = None
            changed = True
            dropped += 1
        if changed:
            results.save(str(results_dir))
            path.write_text(json.dumps(json.loads(path.read_text()), indent=4))  # as committed: one value a line
    return dropped


def _print_outliers(rows: list[Row]) -> None:
    """The suspects, by kind: outliers one a line, end points one a line, noisy series one a line each."""
    for row in rows:
        point = f"{row.commit[:8]}  {row.benchmark}({row.params}): {row.value:.4g}"
        if row.kind == "outlier":
            print(f"{point} between {row.before:.4g} and {row.after:.4g}")
        elif row.kind == "end":
            print(f"{point} off {row.before:.4g} and {row.after:.4g} beside it: an end point, re-measured, kept")
    noisy: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if row.kind == "noisy":
            noisy.setdefault((row.benchmark, row.params), []).append(row)
    for (name, label), points in noisy.items():
        where = ", ".join(f"{row.commit[:8]} {row.value:.4g}" for row in points)
        print(f"noisy     {name}({label}): {len(points)} point(s) off both neighbours, the series as uneven ({where})")


def command_outliers(args: argparse.Namespace) -> int:
    """List a machine's suspect points by kind; with --drop, set its outliers (never an end point, never a noisy
    series' point) to "not measured"."""
    rows = [row for row in machine_outliers(args.machine) if outlier_size(row) > args.min_factor]
    counts = {kind: sum(row.kind == kind for row in rows) for kind in ("outlier", "end", "noisy")}
    print(
        f"tracked: on {args.machine}, {counts['outlier']} outlier(s) (beyond their noise factor of both neighbours "
        f"and of the steady series around them), {counts['end']} end point(s) off the series beside them (to "
        f"re-measure: history does, --drop does not touch them) and {counts['noisy']} point(s) of noisy series (the "
        "series varies as much: kept)"
        + (f"; only those over {args.min_factor}x from the nearer neighbour" if args.min_factor > 1 else "")
    )
    _print_outliers(rows)
    outliers = [(row.benchmark, row.params, row.commit) for row in rows if row.kind == "outlier"]
    if args.drop and outliers:
        print(f"tracked: dropped {drop_points(args.machine, outliers)} outlier(s)")
    return 0


def history_range(machine: str, since_last: bool, range_spec: str) -> str:
    """The git range history runs over: ``range_spec``, or with ``since_last`` the commits after the newest commit
    that has results on the machine, up to ``range_spec``'s tip."""
    if not since_last:
        return range_spec
    order = _commit_order()
    measured = [commit for commit in _machine_results(machine) if commit in order]
    if not measured:
        return range_spec
    return f"{max(measured, key=order.__getitem__)}..{range_spec.split('..')[-1]}"


def command_history(args: argparse.Namespace) -> int:
    mismatch = None if args.same_hardware else hardware_mismatch(args.machine, machine_facts(args.machine))
    if mismatch:
        print(f"tracked.py history: {mismatch}", file=sys.stderr)
        return 2
    describe_machine(args.machine)
    steps = ["--steps", str(args.steps)] if args.steps else []
    commits = history_range(args.machine, args.since_last, args.range)
    before = set(_machine_results(args.machine))
    run = ["run", "--machine", args.machine, "--skip-existing-successful", *steps, *_bench_args(), commits]
    _asv(*run, check=False)
    # An outlier or an end point (:func:`judge_series`) is measured again (once) before the results are committed: at
    # the commits this run measured and at the measured commits next to them (whose neighbours just changed), and
    # the new value is kept, whatever it is (an end point off the series may be a new level: a regression is
    # re-measured, never dropped). Older ones are only listed: re-measuring them would build their commits again.
    recorded = _machine_results(args.machine)
    order = _commit_order()
    series = sorted(recorded, key=lambda commit: order.get(commit, len(order)))
    new = {k for k, commit in enumerate(series) if commit not in before}
    near = {series[k] for k in new | {k - 1 for k in new} | {k + 1 for k in new} if 0 <= k < len(series)}
    suspects = machine_outliers(args.machine)
    outliers = [row for row in suspects if row.commit in near and row.kind in ("outlier", "end")]
    if outliers and not args.no_remeasure:
        print(
            f"tracked: {len(outliers)} outlier(s) and end point(s) among the new commits and their neighbours: "
            "measured again"
        )
        _print_outliers(outliers)
        again = HERE / "results" / "remeasure-commits.txt"
        for name in sorted({row.benchmark for row in outliers}):
            again.write_text("".join(sorted({f"{row.commit}\n" for row in outliers if row.benchmark == name})))
            _asv("run", "--machine", args.machine, "-b", f"^{re.escape(name)}$", f"HASHFILE:{again}", check=False)
        suspects = machine_outliers(args.machine)
    left = [row for row in suspects if row.kind != "noisy"]
    if left:
        print(
            f"tracked: {len(left)} outlier(s) and end point(s) on {args.machine}: check them before committing "
            "(tracked.py outliers)"
        )
        _print_outliers(left)
    print(f"commits with results on {args.machine}: {len(_machine_results(args.machine))}")
    return 0


def default_base(head: str) -> str | None:
    """The newest commit of the committed reference histories that is an ancestor of HEAD (HEAD itself excluded)."""
    recorded = {commit for machine in REFERENCE_MACHINES for commit in _machine_results(machine)}
    ancestors = subprocess.run(["git", "rev-list", f"{head}~1"], cwd=REPO, capture_output=True, text=True).stdout
    for commit in ancestors.splitlines():  # (none when HEAD is the first commit)
        if commit in recorded:
            return commit
    return None


def _units() -> dict[str, str]:
    """Each benchmark's unit, from the suite asv discovered (results/benchmarks.json)."""
    try:
        discovered = json.loads((HERE / "results" / "benchmarks.json").read_text())
    except (OSError, ValueError):
        return {}
    return {name: entry.get("unit", "") for name, entry in discovered.items() if isinstance(entry, dict)}


def compare_results(base: dict, head: dict, units: dict[str, str], factors: dict[str, float], default: float):
    """Rows (benchmark, parameters, base, head, slowdown, flag): slowdown > 1 is worse whichever way the unit points
    (head/base for times, base/head for rates and speedups); flagged beyond the benchmark's noise factor (``default``
    where it has none; never below DEFAULT_FACTOR)."""
    rows = []
    for name in sorted(base.keys() & head.keys()):
        factor = max(DEFAULT_FACTOR, factors.get(name, default))
        upward = higher_is_better(name, units.get(name))
        labels, base_values = base[name]
        for label, old, new in zip(labels, base_values, head[name][1], strict=False):
            if not (_number(old) and _number(new)):
                continue
            slowdown = old / new if upward else new / old
            flag = "worse" if slowdown > factor else "better" if slowdown < 1 / factor else ""
            rows.append((name, label, old, new, slowdown, flag))
    return sorted(rows, key=lambda row: -row[4])


def command_compare(args: argparse.Namespace) -> int:
    head = _git("rev-parse", args.head)
    base = _git("rev-parse", args.base) if args.base else default_base(head)
    if base is None:
        print("tracked: no committed results for an ancestor of HEAD; pass BASE")
        return 2
    factors, overall = _noise_factors()  # (overall: for benchmarks the A/A run did not measure)
    print(
        f"tracked: {base[:8]} (base) vs {head[:8]} on {args.machine}; a change is flagged beyond 1.2x its benchmark's "
        f"A/A noise ({NOISE_FILE.name}; {overall:.2f}x where it has none), and never below {DEFAULT_FACTOR}x",
        flush=True,
    )
    describe_machine(args.machine)
    # both commits built, then their rounds interleaved (base, head, base, head): a machine drifting over the
    # minutes of a run must not read as a change between them
    commits = HERE / "results" / "compare-commits.txt"
    commits.parent.mkdir(exist_ok=True)
    commits.write_text(f"{base}\n{head}\n")
    run = ["run", "--machine", args.machine, "--show-stderr", "--interleave-rounds", *_bench_args()]
    _asv(*run, f"HASHFILE:{commits}", check=False)
    recorded = _machine_results(args.machine)
    missing = [commit[:8] for commit in (base, head) if not recorded.get(commit)]
    if missing:
        print(f"tracked: no results for {', '.join(missing)}: the comparison did not run (see asv's output above)")
        return 2
    rows = compare_results(recorded[base], recorded[head], _units(), factors, overall)
    width = max((len(f"{name}({label})") for name, label, *_ in rows), default=10)
    print(f"\n{'benchmark (parameters)':{width}}  {'base':>11}  {'head':>11}  slowdown")
    for name, label, old, new, slowdown, flag in rows:
        print(f"{name + (f'({label})' if label else ''):{width}}  {old:11.4g}  {new:11.4g}  {slowdown:7.3f}x  {flag}")
    worse = sum(row[5] == "worse" for row in rows)
    better = sum(row[5] == "better" for row in rows)
    print(
        f"tracked: {len(rows)} measurements compared; {worse} worse and {better} better beyond the noise factor "
        "(reported, not failed: shared machines are noisy)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracked.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the tracked benchmarks")
    history = commands.add_parser("history", help="asv run of the tracked set over a range of commits")
    history.add_argument("range", nargs="?", default="main", help="a git range, e.g. 879ea81..main (default: main)")
    history.add_argument("--steps", type=int, default=None, help="at most this many commits, evenly spread")
    history.add_argument(
        "--since-last",
        action="store_true",
        help="only the commits after the newest one with results on the machine, up to the range's tip (the newest "
        "is always among them)",
    )
    history.add_argument("--no-remeasure", action="store_true", help="leave outliers as measured (only listed)")
    history.add_argument(
        "--same-hardware",
        action="store_true",
        help="add results under a machine whose recorded CPU description differs from this one's (hand-edited)",
    )
    history.add_argument(
        "--machine",
        required=True,
        help=f"the name results are kept under (the committed reference machines, {', '.join(REFERENCE_MACHINES)}: "
        "use them only there)",
    )
    outliers = commands.add_parser("outliers", help="points beyond their noise factor of both neighbours")
    outliers.add_argument("--machine", default=REFERENCE_MACHINE)
    outliers.add_argument(
        "--min-factor", type=float, default=1.0, help="only points this many times off the nearer neighbour"
    )
    outliers.add_argument("--drop", action="store_true", help="set them to 'not measured' in the result files")
    noise = commands.add_parser("noise", help="A/A: the installed code measured twice")
    noise.add_argument("--write", action="store_true", help=f"save the factor to {NOISE_FILE.name}")
    compare = commands.add_parser("compare", help="asv continuous of the tracked set between two commits")
    compare.add_argument("base", nargs="?", default=None)
    compare.add_argument("head", nargs="?", default="HEAD")
    compare.add_argument("--machine", default="compare", help="results of the comparison go here (not the reference)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for pattern, what in TRACKED.items():
            print(f"{pattern:70} {what}")
        return 0
    handlers = {"history": command_history, "noise": command_noise, "compare": command_compare}
    return {**handlers, "outliers": command_outliers}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
