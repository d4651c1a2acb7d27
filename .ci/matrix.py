"""CI's support matrix beyond the pinned cell: fresh venvs from the package index (its default torch, a CUDA build,
with its nvidia-* dependencies), pykernels built without isolation (the CUDA half too, against the headers those
dependencies bring), then a fast subset of the suite that covers every route a user takes.

    python .ci/matrix.py [CELL ...] [--out DIR]      # default: every cell; a table in DIR/matrix.md

The pinned cell (Python 3.11, the CPU torch of .ci/constraints.txt, the whole suite) is .ci/run's README command;
these cells are the other ends of what pyproject.toml admits, and tests/test_support.py checks that every lower
bound there is a version one of these cells (or the pinned one) installs. Each cell runs in its own copy of the
tracked files, so its build never touches the checkout's.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFRESH_DAYS = 7  # how long a cell's downloaded wheels stand for "the newest"

# Every op on every backend against the reference, exact derivatives of every order, torch.func, vmap, compile,
# export, the numba backend, the install paths (the plain pip install's first-import build included), and the
# support checks themselves.
SUBSET = [
    "tests/test_ops.py",
    "tests/test_autograd.py",
    "tests/test_torch_rules.py",
    "tests/test_compile.py",
    "tests/test_numba.py",
    "tests/test_fit.py",
    "tests/test_extension.py",
    "tests/test_install.py",
    "tests/test_support.py",
]
# Left out of the cells (test id: why).
DESELECTED = {
    "tests/test_extension.py::test_a_cut_short_cached_library_is_rebuilt_by_the_next_import_and_loaded_after": "it "
    "rebuilds the whole extension once more, through the first-import build test_install runs in every cell; the "
    "pinned cell runs it",
    "tests/test_numba.py::test_numba_cuda_kernels_in_the_simulator": "the GPU check's dry run runs the same simulator "
    "tests in the gpu-stack cell, under numba-cuda as on the GPU machine (1-2 minutes a cell)",
}


@dataclass(frozen=True)
class Cell:
    name: str
    python: str  # major.minor
    requirements: tuple[str, ...]  # pip requirement specifiers, from the package index
    description: str
    gpu_check: bool = False  # build through .ci/gpu_check.py --dry-run (the GPU machine's exact build) first
    environment: dict[str, str] = field(default_factory=dict)
    # Added for the tests only. The plain install's first-import build (test_install) compiles the CPU half only: the
    # cell's own build has compiled the CUDA half already, found by the same plan (pykernels/_build.py), and a second
    # CUDA compile would cost CI minutes a cell that proves nothing more.
    test_environment: dict[str, str] = field(default_factory=lambda: {"PYKERNELS_CUDA": "0"})


COMMON = ("ninja", "setuptools", "wheel", "pytest", "hypothesis", "matplotlib", "tqdm", "mpmath")
CELLS = [
    Cell(
        "gpu-stack",
        "3.12",
        ("torch==2.11.0", "numpy==2.5.*", "numba", "numba-cuda==0.30.4", *COMMON),
        "the GPU machine's stack and the oldest torch: Python 3.12, torch 2.11.0 (CUDA 13.0 build), numpy 2.5, the "
        "newest numba and numba-cuda; built as .ci/gpu_check.py builds on the GPU machine (CUDA half, sm_90)",
        gpu_check=True,
    ),
    Cell(
        "newest",
        "3.13",
        ("torch==2.15.0", "numpy", "numba", *COMMON),
        "the newest of everything: Python 3.13, torch 2.15.0 (the index's default, a CUDA build), the newest numpy "
        "and numba; the CUDA half compiled as a user's install would (found headers, no switches)",
        environment={"TORCH_CUDA_ARCH_LIST": "9.0"},
    ),
]


def find_python(version: str) -> str:
    """An interpreter of `version` (major.minor) that runs: pyenv's newest patch release of it, else one on PATH
    (pyenv's shims are on PATH but refuse versions that are not activated, so each candidate is tried)."""
    pyenv = glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}"))
    candidates = sorted(pyenv, key=lambda path: [int(n) for n in re.findall(r"\d+", Path(path).parents[1].name)])
    candidates = candidates[::-1] + ([found] if (found := shutil.which(f"python{version}")) else [])
    for candidate in candidates:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if subprocess.run([candidate, "--version"], capture_output=True, timeout=60).returncode == 0:
                return candidate
    raise CellFailed(f"no Python {version} found (in pyenv or on PATH)")


def wheel_folder() -> Path:
    """Where the cells' wheels are kept between runs: PYKERNELS_CI_WHEELS, else ~/.cache/pykernels-ci/wheels."""
    folder = Path(os.environ.get("PYKERNELS_CI_WHEELS", "~/.cache/pykernels-ci/wheels")).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def index_environment() -> dict[str, str]:
    """The environment for pip: the package index only (the machine's local wheels and torch cap switched off);
    pip's own download cache still serves repeats."""
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "VIRTUAL_ENV")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env.pop("PYTHONPATH", None)
    return env


def copy_tree(target: Path) -> None:
    """The tracked files, and the untracked ones git does not ignore (a local run sees uncommitted work)."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listing.decode().split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)


def summary_counts(output: str) -> dict[str, int]:
    """passed/failed/skipped/error counts from pytest's closing line (the last "== ... in 12.3s ==" line)."""
    closing = [line for line in output.splitlines() if re.search(r"\bin [0-9.]+s\b", line)]
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", closing[-1] if closing else ""):
        counts["error" if word.startswith("error") else word] += int(number)
    return counts


def failed_steps(steps_md: str) -> list[str]:
    """The GPU check's steps (its steps.md table) that exited non-zero or timed out."""
    rows = [line.split("|") for line in steps_md.splitlines() if line.count("|") >= 4]
    return [row[1].strip() for row in rows[2:] if row[3].strip().startswith(("exit", "timed out"))]


def run_cell(cell: Cell, out: Path) -> dict:
    """Build and test one cell; returns its row (versions, times, counts, outcome)."""
    log_path = out / f"{cell.name}.log"
    row: dict = {"cell": cell.name, "python": cell.python, "description": cell.description}
    env = index_environment() | cell.environment | {"PYTHONUNBUFFERED": "1"}
    temporary = tempfile.TemporaryDirectory(prefix=f"pykernels-{cell.name}-", ignore_cleanup_errors=True)
    with temporary as work, open(log_path, "w") as log:
        work_dir = Path(work)
        tree, venv = work_dir / "tree", work_dir / "venv"
        copy_tree(tree)

        def step(name: str, command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
            """Run one step (its own process group: a timeout ends its compilers and workers too), logging its
            output, partial or whole; a step that fails or times out ends the cell."""
            log.write(f"\n$ {' '.join(command)}\n")
            log.flush()
            begin = time.perf_counter()
            process = subprocess.Popen(
                command,
                cwd=tree,
                env=kwargs.get("env", env),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",  # (a compiler's or a test's stray byte must not end the driver)
                start_new_session=True,
            )
            RUNNING.append(process)
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
                RUNNING.remove(process)
                log.write(stdout + stderr)
                raise CellFailed(f"{name} timed out after {timeout:.0f} s; see {log_path}") from None
            RUNNING.remove(process)
            log.write(stdout + stderr)
            log.flush()
            row[f"{name}_seconds"] = round(time.perf_counter() - begin)
            print(f"matrix: {cell.name}: {name} exit {process.returncode} in {row[f'{name}_seconds']} s", flush=True)
            result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
            if name == "tests":
                row.update(summary_counts(stdout))
                slowest = stdout.partition("slowest 10 durations")[2].partition("\n\n")[0]
                print(f"matrix: {cell.name}: the slowest tests{slowest}", flush=True)
            if process.returncode != 0:
                raise CellFailed(f"{name} failed (exit {process.returncode}); see {log_path}")
            return result

        python = str(venv / "bin" / "python")
        try:
            step("venv", [find_python(cell.python), "-m", "venv", str(venv)], 300)
            # pip's HTTP cache keeps nothing from this index (its answers are not cacheable), so the wheels are kept
            # here: the first run downloads them (~5 GB a cell); later runs install from the folder, and ask the index
            # again weekly or when the folder lacks something.
            wheels = str(wheel_folder())
            install = [python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels, *cell.requirements]
            download = [python, "-m", "pip", "download", "-q", "-d", wheels, *cell.requirements]
            stamp = Path(wheels) / f".downloaded-{cell.name}"
            if not stamp.exists() or time.time() - stamp.stat().st_mtime > REFRESH_DAYS * 86400:
                step("download", download, 3600)  # (weekly: an unpinned "newest" stays the index's newest)
                stamp.touch()
            try:
                step("install", install, 1800)
            except CellFailed:  # the folder lacks something (a pin changed): fetch it
                step("download", download, 3600)
                step("install", install, 1800)
            versions = step("versions", [python, "-c", VERSIONS], 120).stdout.strip().splitlines()[-1]
            row.update(json.loads(versions))
            dry_run_failure = None
            if cell.gpu_check:
                dry_run = out / f"{cell.name}-gpu-check"
                # ("build": the whole dry run, whose own steps' limits add up to 55 minutes; its build is the first)
                step("build", [python, ".ci/gpu_check.py", "--dry-run", "--out", str(dry_run)], 3600)
                row["gpu_check_steps"] = (dry_run / "steps.md").read_text()
                failed = failed_steps(row["gpu_check_steps"])
                if "| build |" not in row["gpu_check_steps"] or "build" in failed:
                    raise CellFailed(f"the GPU check's dry run failed at its build: see {dry_run}")
                # another step's failure fails the cell too, after the subset has run (one CI run says all it can)
                dry_run_failure = f"the GPU check's dry run failed at {failed}: see {dry_run}" if failed else None
            else:
                install = [python, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "-e", "."]
                step("build", install, 2400)
            info = json.loads(step("info", [python, "-m", "pykernels", "info"], 600).stdout)
            row["compiled_backends"] = info["compiled_backends"]
            row["cuda_kernels"] = info["cuda_kernels"]
            if "cuda" not in info["compiled_backends"]:
                raise CellFailed(f"the CUDA half was not built: {info['cuda_kernels']}")
            deselected = [f"--deselect={test}" for test in DESELECTED]
            pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10", *deselected, *SUBSET]
            step("tests", pytest, 2400, env=env | cell.test_environment)
            if dry_run_failure:
                raise CellFailed(dry_run_failure)
            row["outcome"] = "ok"
        except (CellFailed, subprocess.TimeoutExpired) as failure:
            row["outcome"] = f"FAILED: {failure}"
        except Exception as failure:  # (the driver's own bug or a step's unreadable output: this cell only)
            row["outcome"] = f"FAILED: {type(failure).__name__}: {failure}"
    return row


class CellFailed(Exception):
    pass


RUNNING: list[subprocess.Popen] = []  # the step running now (its own process group)


ROWS: list[dict] = []  # the cells finished so far


def write_table(rows: list[dict], out: Path) -> None:
    (out / "matrix.json").write_text(json.dumps(rows, indent=1))
    (out / "matrix.md").write_text(markdown(rows))


def _end_steps(signum, frame) -> None:
    """SIGTERM (CI's time limit): end the running step's whole process group too, not only this driver, and print
    the cells that finished. Further SIGTERMs (timeout's, then CI's trap) are ignored while it cleans up."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for process in RUNNING:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    print(f"matrix: ended by signal {signum}; the cells that finished:\n{markdown(ROWS)}", flush=True)
    raise SystemExit(f"matrix: ended by signal {signum}")


VERSIONS = """
import json, sys, numpy, numba, torch
try:
    import numba_cuda
    numba_cuda_version = numba_cuda.__version__
except ImportError:
    numba_cuda_version = None
print(json.dumps({"python_version": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
                  "numba": numba.__version__, "numba_cuda": numba_cuda_version}))
"""


def markdown(rows: list[dict]) -> str:
    lines = [
        "| cell | Python | torch | numpy | numba | numba-cuda | download + install s | build s (CUDA half) | tests s "
        "| passed | failed | skipped | outcome |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cuda = "with" if "cuda" in row.get("compiled_backends", []) else "without"
        lines.append(
            f"| {row['cell']} | {row.get('python_version', row['python'])} | {row.get('torch', '-')} | "
            f"{row.get('numpy', '-')} | {row.get('numba', '-')} | {row.get('numba_cuda') or '-'} | "
            f"{row.get('download_seconds', '-')} + {row.get('install_seconds', '-')} | {row.get('build_seconds', '-')} "
            f"({cuda}) | "
            f"{row.get('tests_seconds', '-')} | {row.get('passed', '-')} | {row.get('failed', '-')} | "
            f"{row.get('skipped', '-')} | {row['outcome']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [cell.name for cell in CELLS]
    parser.add_argument("cells", nargs="*", default=names, help=f"cells to run: {', '.join(names)} (default all)")
    parser.add_argument("--out", type=Path, default=ROOT / "ci-artifacts" / "matrix")
    args = parser.parse_args(argv)
    if unknown := set(args.cells) - set(names):
        parser.error(f"unknown cells {sorted(unknown)}: choose from {names}")
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _end_steps)
    rows = ROWS
    for cell in CELLS:
        if cell.name in args.cells:
            rows.append(run_cell(cell, args.out))
            write_table(rows, args.out)  # (each cell's row as soon as it ends: a timeout keeps what finished)
    print(markdown(rows))
    for row in rows:
        if "gpu_check_steps" in row:
            print(f"GPU check dry run ({row['cell']}):\n{row['gpu_check_steps']}")
    return 0 if all(row["outcome"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
