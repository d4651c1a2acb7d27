"""The tracked set: the benchmarks that tell pykernels' story, run over the project's history and on every change.

Run from ``asv_bench/`` with asv installed (``pip install '.[test]'``)::

    python tracked.py list                      # the tracked benchmarks (regexes passed to asv -b)
    python tracked.py history --steps 16 A..B   # asv run of the tracked set over commits, each built in its own env
    python tracked.py noise                     # A/A: the installed HEAD measured twice; writes noise.json
    python tracked.py compare [BASE] [HEAD]     # asv continuous of the tracked set, flagged beyond the noise factor

``compare``'s BASE defaults to the newest commit of the committed reference history (``results/<machine>/``) that is
an ancestor of HEAD: the last landed main whose results were recorded. It reports; it never fails on a slowdown
(shared machines are noisy), only on an error of its own.
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
DEFAULT_FACTOR = 1.3  # until noise.json says otherwise

# Each entry: an asv -b regex and what it shows. Small enough to run in a few minutes per commit on 2 cores.
TRACKED = {
    r"^bench_training\.SeedPolynomialFit\.time_1000_steps": "the seed fit, per implementation (write-up rows too)",
    r"^bench_training\.BatchedFits\.track_ns_per_series_step": "batched fits, ns per series x step",
    r"^bench_training\.LargeProblemEpoch\.time_epoch": "the 10^7-weight problem's training step",
    r"^bench_training\.LargeProblemInKernelSpeedup\.track_speedup": "in-kernel-sample epoch over the write-up's",
    r"^bench_ops\.Speedup\.track_speedup": "poly_mse and dot over NumPy and torch, side by side",
    r"^bench_ops\.Bandwidth\.track_gbytes_per_second": "GB/s of the bandwidth-bound ops at 10^7 float32",
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
    machines = json.loads(path.read_text()) if path.exists() else {"version": 1}
    if machines.get(name, {}).get("cpu"):
        return
    machines[name] = machine_facts(name)
    path.write_text(json.dumps(machines, indent=4))


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def _machine_results(machine: str) -> dict[str, dict[str, list]]:
    """commit hash -> {benchmark name -> flat list of its values (one per parameter combination)} of one machine."""
    from asv.results import Results

    found: dict[str, dict[str, list]] = {}
    for path in sorted((HERE / "results" / machine).glob("*.json")):
        if path.name == "machine.json":
            continue
        results = Results.load(str(path), machine)
        values = found.setdefault(results.commit_hash, {})
        for key in results.get_all_result_keys():
            values[key] = results.get_result_value(key, results.get_result_params(key))
    return found


def noise_factor(first: dict[str, list], second: dict[str, list]) -> tuple[float, dict[str, float]]:
    """The largest ratio (slower over faster) between two runs of the same code, over every tracked measurement both
    runs have; and each benchmark's largest ratio."""
    per_benchmark: dict[str, float] = {}
    for name in sorted(first.keys() & second.keys()):
        ratios = [
            max(a, b) / min(a, b)
            for a, b in zip(first[name], second[name], strict=False)
            if isinstance(a, float) and isinstance(b, float) and math.isfinite(a) and math.isfinite(b) and min(a, b) > 0
        ]
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
        runs.append(_machine_results(label)[head])
    factor, per_benchmark = noise_factor(*runs)
    report = {
        "commit": head,
        "factor": round(factor, 3),
        "load_average": os.getloadavg(),
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
    for commit in _git("rev-list", f"{head}~1").splitlines():
        if commit in recorded:
            return commit
    return None


def command_compare(args: argparse.Namespace) -> int:
    head = _git("rev-parse", args.head)
    base = _git("rev-parse", args.base) if args.base else default_base(head)
    if base is None:
        print("tracked: no committed results for an ancestor of HEAD; pass BASE")
        return 2
    factor = DEFAULT_FACTOR
    if NOISE_FILE.exists():
        factor = max(factor, json.loads(NOISE_FILE.read_text())["factor"])
    print(f"tracked: {base[:8]} (base) vs {head[:8]}, flagging changes beyond {factor:.2f}x (noise: {NOISE_FILE.name})")
    describe_machine(args.machine)
    result = _asv(
        "continuous",
        "--machine",
        args.machine,
        "--factor",
        str(factor),
        "--no-only-changed",
        "--sort",
        "ratio",
        *_bench_args(),
        base,
        head,
        check=False,
    )
    # asv continuous exits 1 when it found a change beyond the factor: reported above, not a failure here
    print(
        "tracked: changes beyond the noise factor are marked '+' (slower) or '-' (faster) above"
        if result.returncode == 1
        else "tracked: no change beyond the noise factor"
    )
    return 0 if result.returncode in (0, 1) else result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracked.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the tracked benchmarks")
    history = commands.add_parser("history", help="asv run of the tracked set over a range of commits")
    history.add_argument("range", nargs="?", default="main", help="a git range, e.g. 879ea81..main (default: main)")
    history.add_argument("--steps", type=int, default=None, help="at most this many commits, evenly spread")
    history.add_argument("--machine", default=REFERENCE_MACHINE)
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
