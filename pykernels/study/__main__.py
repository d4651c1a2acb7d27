"""``pykernels-study``: run the study and write report.md, results.json and plots."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import batched, gram, large, limits, polyfit, report, speed
from ._common import machine_info, plain, speedup

SECTIONS = ("poly", "speed", "large", "batched", "gram", "limits")  # limits last: it reads the others' rows


def _positive(text: str) -> int:
    """An integer of at least 1 (argparse turns the ValueError into a usage error naming the option)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pykernels-study",
        description="Reproduce both write-ups' comparisons with pykernels' rows beside them.",
    )
    parser.add_argument("--out", type=Path, default=Path("study-results"), help="output folder")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every row at small sizes (about 2 minutes on 2 cores): a smoke run, not a measurement",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "all"),
        default="all",
        help="which devices' rows to run (default: all available)",
    )
    parser.add_argument("--threads", type=_positive, default=None, help="torch (and numba) threads; default: torch's")
    # --repeat and --only default to None so that --from-results can tell them given from left out
    parser.add_argument("--repeat", type=_positive, default=None, help="timed repeats per row (median; default 1)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=None, help="sections to run (default: all)")
    parser.add_argument("--steps", type=_positive, default=None, help="polynomial fit steps (default 200,000)")
    parser.add_argument(
        "--from-results",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="measure nothing: write the report and plots again from a results.json an earlier run wrote",
    )
    parser.add_argument(
        "--thp",
        action="store_true",
        help="re-run with THP_MEM_ALLOC_ENABLE=1: huge pages for torch's large CPU tensors",
    )
    args = parser.parse_args(argv)
    if args.from_results is not None:
        # a saved run is written again as it ran: a measuring flag here would be silently ignored
        given = [
            flag
            for flag, value, default in (
                ("--quick", args.quick, False),
                ("--device", args.device, "all"),
                ("--threads", args.threads, None),
                ("--repeat", args.repeat, None),
                ("--only", args.only, None),
                ("--steps", args.steps, None),
                ("--thp", args.thp, False),
            )
            if value != default
        ]
        if given:
            parser.error(
                f"argument --from-results: not allowed with {', '.join(given)} (it measures nothing: the report "
                "is written from the saved run as it ran)"
            )
    args.repeat = args.repeat or 1
    args.only = args.only or list(SECTIONS)
    problem = _out_problem(args.out)
    if problem:  # before any section runs (a full study takes many minutes before it writes)
        parser.error(f"argument --out: {problem}")
    return args


def _out_problem(out: Path) -> str | None:
    """Why the study could not write into the folder ``out`` (new or existing), or None."""
    if out.exists():
        if not out.is_dir():
            return f"{str(out)!r} is an existing file; expected a folder (new or existing) for the report"
        return None if os.access(out, os.W_OK | os.X_OK) else f"the folder {str(out)!r} is not writable"
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create the folder {str(out)!r}: {str(parent)!r} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create the folder {str(out)!r}: {str(parent)!r} is not writable"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.thp and os.environ.get("THP_MEM_ALLOC_ENABLE") != "1":
        # torch reads the variable when its allocator starts: a fresh process is the only reliable way
        env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1"}
        # -P (3.11+): do not put the current folder first on sys.path, where a source checkout's pykernels/ (without
        # its compiled extension) would shadow the installed package
        safe_path = ["-P"] if sys.version_info >= (3, 11) else []
        return subprocess.call([sys.executable, *safe_path, "-m", "pykernels.study", *(argv or sys.argv[1:])], env=env)
    if args.from_results is not None:
        return _rewrite(args.from_results, args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ("cpu", "cuda") if args.device == "all" else (args.device,)
    quick = args.quick
    steps = args.steps or (2_000 if quick else polyfit.SEED_STEPS)
    configs = {
        "poly": polyfit.FitConfig(
            steps=steps, repeat=args.repeat, devices=devices, warmup_steps=min(steps, max(200, steps // 10))
        ),
        "speed": speed.SpeedConfig(add_size=1_000 if quick else 10_000, devices=devices, repeat=args.repeat),
        "large": large.LargeConfig(n=100_000 if quick else 10_000_000, epochs=20 if quick else 200, devices=devices),
        "batched": batched.BatchedConfig(series=64 if quick else 1024, steps=200 if quick else 2000, devices=devices),
        "gram": gram.GramConfig(
            points=100_000 if quick else 1_000_000,
            steps=2_000 if quick else 20_000,
            boundary_steps=(2_000, 20_000) if quick else (20_000, 1_000_000),
            sharded_points=10_000 if quick else 100_000,
            sharded_steps=200 if quick else 2_000,
            repeat=args.repeat if quick else max(3, args.repeat),
        ),
    }
    # the passes' rates over arrays of the large problem's n: the working set its rows run on
    configs["limits"] = limits.LimitsConfig(gemm_size=512 if quick else 1536, stream_elements=configs["large"].n)
    runners = {"poly": polyfit.run, "speed": speed.run, "large": large.run, "batched": batched.run, "gram": gram.run}
    started, load_at_start = time.perf_counter(), _load_averages()
    sections = {name: runners[name](configs[name]) for name in SECTIONS[:-1] if name in args.only}
    if "limits" in args.only:
        sections["limits"] = limits.run(configs["limits"], sections)
    machine = {**machine_info(), "load_average_start": load_at_start, "load_average_end": _load_averages()}
    command = "pykernels-study " + shlex.join(argv if argv is not None else sys.argv[1:])
    settings = {
        "quick": quick,
        "devices": devices,
        "repeat": args.repeat,
        "poly_steps": steps,
        "large_n": configs["large"].n,
        "large_epochs": configs["large"].epochs,
    }
    path = report.write(args.out, sections, machine, command.strip(), settings)
    print(summary_line(sections, time.perf_counter() - started, path))
    return 1 if flagged_rows(sections) else 0


# what a results.json that parses but does not fit this code's report raises while the report is written
_MISFIT = (KeyError, TypeError, ValueError, IndexError, AttributeError, StopIteration, ZeroDivisionError, RuntimeError)


def _misfit_words(error: BaseException) -> str:
    """One line for an error raised while writing a saved run's report."""
    if isinstance(error, report.ResultsError):
        return str(error)
    if isinstance(error, KeyError):
        return f"a section or row lacks the key {error}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _rewrite(results_json: Path, out: Path) -> int:
    """The report and plots of an earlier run, from its results.json (traces as thinned there), into ``out``: 2 with
    one line when the file cannot be read or does not fit; else the run's own exit status (1 when rows are
    FLAGGED, as :func:`main` returns). Everything is written into a scratch folder inside ``out`` first and moved
    into ``out`` only when all of it was written, so a failure leaves ``out`` as it was."""
    where = f"pykernels-study: --from-results {str(results_json)!r}"
    try:
        saved = report.read_results(results_json)
    except (OSError, UnicodeDecodeError, *_MISFIT) as error:
        print(f"{where}: cannot read it: {_misfit_words(error)}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    # inside --out, which _out_problem checked is writable (its parent need not be); removed whatever happens
    with tempfile.TemporaryDirectory(dir=out, prefix=".pykernels-study-") as scratch:
        try:
            report.write(Path(scratch), saved.sections, saved.machine, saved.command, saved.settings)
        except _MISFIT as error:
            print(f"{where}: does not fit this pykernels-study's report: {_misfit_words(error)}", file=sys.stderr)
            return 2
        for written in sorted(Path(scratch).iterdir()):
            os.replace(written, out / written.name)
    print(f"pykernels-study: report and plots written again from {results_json}: {out / 'report.md'}")
    return 1 if flagged_rows(saved.sections) else 0


def _load_averages() -> tuple[float, ...] | None:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def flagged_rows(sections: dict) -> list[str]:
    """Rows that fit but did not reach the reference's MSE (a row that does not fit is never counted)."""
    return [r["name"] for s in sections.values() for r in s.rows if r.get("converged_same") is False]


def summary_line(sections: dict, seconds: float, path: Path) -> str:
    rows = [r for s in sections.values() for r in s.rows]
    fits = [r for r in rows if r.get("converged_same") is not None]
    busy = [r for r in rows if r.get("load", {}).get("busy")]
    flagged = flagged_rows(sections)
    summary = f"pykernels-study: {len(rows)} rows, {sum(len(s.skipped) for s in sections.values())} skipped, "
    poly_rows = [
        r
        for r in (sections["poly"].rows if "poly" in sections else [])
        # the fastest fit: one that fit, with a measured time (NaN would make min() meaningless)
        if r["group"] != "floor" and r.get("converged_same") is not False and math.isfinite(r["us_per_step"])
    ]
    if poly_rows:
        best = min(poly_rows, key=lambda r: r["us_per_step"])
        summary += (
            f"fastest fit {best['name']} at {plain(best['us_per_step'])} µs/step "
            f"({speedup(best['speedup'])} {sections['poly'].extra['reference_row']}), "
        )
    summary += f"FLAGGED: {', '.join(flagged)}; " if flagged else f"all {len(fits)} fits agree; "
    if busy:
        summary += f"{len(busy)} rows measured under load (see the report); "
    return summary + f"{seconds:.0f} s; report: {path}"


if __name__ == "__main__":
    sys.exit(main())
