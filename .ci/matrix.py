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
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


@dataclass(frozen=True)
class Cell:
    name: str
    python: str  # major.minor
    requirements: tuple[str, ...]  # pip requirement specifiers, from the package index
    description: str
    gpu_check: bool = False  # build through .ci/gpu_check.py --dry-run (the GPU machine's exact build) first
    environment: dict[str, str] = field(default_factory=dict)
    test_environment: dict[str, str] = field(default_factory=dict)  # added for the tests only


COMMON = ("ninja", "setuptools", "wheel", "pytest", "hypothesis", "matplotlib", "tqdm", "mpmath")
CELLS = [
    Cell(
        "gpu-stack",
        "3.12",
        ("torch==2.11.0", "numpy==2.5.*", "numba", "numba-cuda==0.30.4", *COMMON),
        "the GPU machine's stack and the oldest torch: Python 3.12, torch 2.11.0 (CUDA 13.0 build), numpy 2.5, the "
        "newest numba and numba-cuda; built as .ci/gpu_check.py builds on the GPU machine (CUDA half, sm_90)",
        gpu_check=True,
        # (the plain install's first-import build compiles the CPU half only here; the newest cell compiles both)
        test_environment={"PYKERNELS_CUDA": "0"},
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
    """An interpreter of `version` (major.minor): on PATH, or one of pyenv's."""
    found = shutil.which(f"python{version}")
    if found:
        return found
    candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    if not candidates:
        raise SystemExit(f"matrix: no Python {version} (on PATH or in pyenv)")
    return candidates[-1]


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
    """passed/failed/skipped/error counts from pytest's closing line."""
    last = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last[-1] if last else ""):
        counts[word.rstrip("s") if word.startswith("error") else word] += int(number)
    return counts


def run_cell(cell: Cell, out: Path) -> dict:
    """Build and test one cell; returns its row (versions, times, counts, outcome)."""
    log_path = out / f"{cell.name}.log"
    row: dict = {"cell": cell.name, "python": cell.python, "description": cell.description}
    env = index_environment() | cell.environment | {"PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix=f"pykernels-{cell.name}-") as work, open(log_path, "w") as log:
        work_dir = Path(work)
        tree, venv = work_dir / "tree", work_dir / "venv"
        copy_tree(tree)

        def step(name: str, command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
            log.write(f"\n$ {' '.join(command)}\n")
            log.flush()
            begin = time.perf_counter()
            result = subprocess.run(
                command, cwd=tree, env=kwargs.get("env", env), capture_output=True, text=True, timeout=timeout
            )
            log.write(result.stdout + result.stderr)
            log.flush()
            row[f"{name}_seconds"] = round(time.perf_counter() - begin)
            print(f"matrix: {cell.name}: {name} exit {result.returncode} in {row[f'{name}_seconds']} s", flush=True)
            if result.returncode != 0:
                raise CellFailed(f"{name} failed (exit {result.returncode}); see {log_path}")
            return result

        python = str(venv / "bin" / "python")
        try:
            step("venv", [find_python(cell.python), "-m", "venv", str(venv)], 300)
            # pip's HTTP cache keeps nothing from this index (its answers are not cacheable), so the wheels are kept
            # here: the first run downloads them (~5 GB a cell), later runs only ask the index what is newest.
            wheels = str(wheel_folder())
            step("download", [python, "-m", "pip", "download", "-q", "-d", wheels, *cell.requirements], 3600)
            install = [python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels, *cell.requirements]
            step("install", install, 1800)
            versions = step("versions", [python, "-c", VERSIONS], 120).stdout.strip().splitlines()[-1]
            row.update(json.loads(versions))
            if cell.gpu_check:
                dry_run = out / f"{cell.name}-gpu-check"
                step("build", [python, ".ci/gpu_check.py", "--dry-run", "--out", str(dry_run)], 2400)
                row["gpu_check_steps"] = (dry_run / "steps.md").read_text()
                if "| build |" not in row["gpu_check_steps"] or "exit" in row["gpu_check_steps"]:
                    raise CellFailed(f"a step of the GPU check's dry run failed: see {dry_run}/steps.md")
            else:
                install = [python, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "-e", "."]
                step("build", install, 2400)
            info = json.loads(step("info", [python, "-m", "pykernels", "info"], 600).stdout)
            row["compiled_backends"] = info["compiled_backends"]
            row["cuda_kernels"] = info["cuda_kernels"]
            if "cuda" not in info["compiled_backends"]:
                raise CellFailed(f"the CUDA half was not built: {info['cuda_kernels']}")
            try:
                pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET]
                tests = step("tests", pytest, 2400, env=env | cell.test_environment)
                row.update(summary_counts(tests.stdout))
            except CellFailed:
                row.update(summary_counts(log_path.read_text()))
                raise
            row["outcome"] = "ok"
        except (CellFailed, subprocess.TimeoutExpired) as failure:
            row["outcome"] = f"FAILED: {failure}"
    return row


class CellFailed(Exception):
    pass


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
    parser.add_argument("cells", nargs="*", choices=[*names, []], default=names, help="cells to run (default all)")
    parser.add_argument("--out", type=Path, default=ROOT / "ci-artifacts" / "matrix")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_cell(cell, args.out) for cell in CELLS if cell.name in args.cells]
    (args.out / "matrix.json").write_text(json.dumps(rows, indent=1))
    (args.out / "matrix.md").write_text(markdown(rows))
    print(markdown(rows))
    for row in rows:
        if "gpu_check_steps" in row:
            print(f"GPU check dry run ({row['cell']}):\n{row['gpu_check_steps']}")
    return 0 if all(row["outcome"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
