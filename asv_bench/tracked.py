"""The tracked set: the benchmarks that tell pykernels' story, run over the project's history and on every change.

Run from ``asv_bench/`` with asv installed (``pip install '.[test]'``)::

    python tracked.py list                                  # the tracked benchmarks (regexes passed to asv -b)
    python tracked.py history --machine NAME --steps 12 main  # asv run over commits, each built in its own env
    python tracked.py noise --write                         # A/A: the installed code measured twice -> noise.json
    python tracked.py compare [BASE] [HEAD]                 # both commits built and run; the changes, flagged

``compare``'s BASE defaults to the newest commit of the committed reference history (``results/cpu-2core/``) that is
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
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REFERENCE_MACHINE = "cpu-2core"  # the machine whose results are committed under results/
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


def _machine_results(machine: str) -> dict[str, dict[str, tuple[list[str], list]]]:
    """commit hash -> {benchmark name -> (a label per parameter combination, the values)} of one machine."""
    import itertools

    from asv.results import Results

    found: dict[str, dict[str, tuple[list[str], list]]] = {}
    for path in sorted((HERE / "results" / machine).glob("*.json")):
        if path.name == "machine.json":
            continue
        results = Results.load(str(path), machine)
        measured = found.setdefault(results.commit_hash, {})
        for key in results.get_all_result_keys():
            params = results.get_result_params(key)
            labels = [", ".join(map(str, combination)) for combination in itertools.product(*params)] or [""]
            measured[key] = (labels, results.get_result_value(key, params))
    return found


def _number(value) -> float | None:
    return value if isinstance(value, float) and math.isfinite(value) and value > 0 else None


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


def command_history(args: argparse.Namespace) -> int:
    describe_machine(args.machine)
    steps = ["--steps", str(args.steps)] if args.steps else []
    run = ["run", "--machine", args.machine, "--skip-existing-successful", *steps, *_bench_args(), args.range]
    _asv(*run, check=False)
    print(f"commits with results on {args.machine}: {len(_machine_results(args.machine))}")
    return 0


def default_base(head: str) -> str | None:
    """The newest commit of the committed reference history that is an ancestor of HEAD (HEAD itself excluded)."""
    recorded = set(_machine_results(REFERENCE_MACHINE))
    ancestors = subprocess.run(["git", "rev-list", f"{head}~1"], cwd=REPO, capture_output=True, text=True).stdout
    for commit in ancestors.splitlines():  # (none when HEAD is the first commit)
        if commit in recorded:
            return commit
    return None


# asv treats every value as lower-is-better; these units are rates and speedups, where higher is better
HIGHER_IS_BETTER_UNITS = {"x", "GB/s"}


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
        higher_is_better = units.get(name) in HIGHER_IS_BETTER_UNITS
        labels, base_values = base[name]
        for label, old, new in zip(labels, base_values, head[name][1], strict=False):
            if not (_number(old) and _number(new)):
                continue
            slowdown = old / new if higher_is_better else new / old
            flag = "worse" if slowdown > factor else "better" if slowdown < 1 / factor else ""
            rows.append((name, label, old, new, slowdown, flag))
    return sorted(rows, key=lambda row: -row[4])


def command_compare(args: argparse.Namespace) -> int:
    head = _git("rev-parse", args.head)
    base = _git("rev-parse", args.base) if args.base else default_base(head)
    if base is None:
        print("tracked: no committed results for an ancestor of HEAD; pass BASE")
        return 2
    noise = json.loads(NOISE_FILE.read_text()) if NOISE_FILE.exists() else {}
    overall = noise.get("factor", DEFAULT_FACTOR)  # for benchmarks the A/A run did not measure
    factors = {name: 1.2 * value for name, value in noise.get("per_benchmark", {}).items()}
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
        "--machine",
        required=True,
        help=f"the name results are kept under ({REFERENCE_MACHINE} is the committed reference machine: use it only "
        "there)",
    )
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
    return {"history": command_history, "noise": command_noise, "compare": command_compare}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
