"""A plain ``pip install .`` as a user types it: a fresh venv that has torch, an isolated build (it cannot see that
torch, so it compiles nothing), then the kernels compiled on first import, once, by whichever of two concurrent
first imports gets there first, and loaded from the cache afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = textwrap.dedent("""
    import json, time
    start = time.perf_counter()
    import torch
    torch_seconds = time.perf_counter() - start
    import pykernels
    import_seconds = time.perf_counter() - start - torch_seconds
    x = torch.linspace(-1, 1, 1001, dtype=torch.float64)
    c = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    got = [*pykernels.poly_mse(x, torch.cos(x), c), pykernels.dot(x, torch.cos(x)),
           *pykernels.poly_mse(x, torch.cos(x), c, backend="numba")]
    want = [*pykernels.poly_mse(x, torch.cos(x), c, backend="torch"), torch.dot(x, torch.cos(x)),
            *pykernels.poly_mse(x, torch.cos(x), c, backend="torch")]
    print(json.dumps({"same": all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(got, want)),
                      "file": pykernels.__file__, "extension": pykernels.build_info()["extension"],
                      "pykernels_import_seconds": import_seconds}))
""")


def _clean_copy(target: Path) -> Path:
    """The tracked files as they are now (a user's clean clone)."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        for name in filter(None, files.decode().split("\0")):
            if (ROOT / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target / name)
    else:
        shutil.copytree(ROOT, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".venv", "build", "*.so"))
    return target


@pytest.mark.slow
def test_plain_pip_install_builds_on_first_import_once_and_then_loads_from_the_cache(tmp_path):
    source = _clean_copy(tmp_path / "source")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # The fresh venv sees this environment's packages (torch, numpy, numba: whichever versions this run tests) through
    # a .pth line, as a user's venv has them installed; pip finds them satisfied and builds pykernels in isolation.
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "this-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYKERNELS_CACHE_DIR"] = str(tmp_path / "cache")

    def pip(*args):
        result = subprocess.run(
            [python, "-m", "pip", "install", "-q", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    start = time.perf_counter()
    pip(str(source))  # plain: isolated, no torch in the build
    install_seconds = time.perf_counter() - start
    elsewhere = tmp_path / "elsewhere"  # not the source folder, whose pykernels/ would shadow the installed one
    elsewhere.mkdir()
    imports = [
        subprocess.Popen(
            [python, "-c", CHECK], cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=900) for process in imports]
    for process, (_, stderr) in zip(imports, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    messages = "".join(stderr for _, stderr in outputs)
    assert messages.count("pykernels: compiled in") == 1, messages  # one build for both
    again = subprocess.run(
        [python, "-c", CHECK], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    assert "compiling" not in again.stderr
    cached = json.loads(again.stdout.strip().splitlines()[-1])
    for report in (*reports, cached):
        assert report["same"] and str(venv) in report["file"]
        assert report["extension"].startswith(f"compiled on first use into {tmp_path / 'cache'}")
    assert install_seconds < 300 and cached["pykernels_import_seconds"] < 10
