"""The support matrix's promises: pyproject's bounds are the versions CI tests, an unsupported torch is refused at
import with the range named, and the CUDA half is built where it can be, found through torch's own nvidia-*
packages where the toolkit lacks their headers, and otherwise skipped with the reason and the switch named."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from pykernels import _build, _extension, _support

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _lower_bounds() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["cuda"]
    bounds = {}
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9_-]+", requirement)[0].lower()
        lower = re.search(r">=\s*([0-9][0-9.]*)", requirement.split(";")[0])
        if lower:
            bounds[name] = lower[1]
    return bounds


def _tested_versions() -> dict[str, set[str]]:
    """package -> the versions CI installs exactly: the pinned cell's constraints and the matrix cells' pins."""
    tested: dict[str, set[str]] = {}
    pins = [line for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines() if "==" in line]
    for cell in _load(ROOT / ".ci" / "matrix.py").CELLS:
        pins += [requirement for requirement in cell.requirements if "==" in requirement]
    for pin in pins:
        name, version = pin.split("==")
        version = version.strip()
        if not version.endswith("*"):  # (a wildcard pin such as numpy==2.5.* tests no one version)
            tested.setdefault(name.strip().lower(), set()).add(version)
    return tested


def _release(version: str) -> tuple[int, ...]:
    parts = tuple(int(part) for part in version.split("+")[0].split("."))
    return parts + (0,) * (3 - len(parts))


@pytest.mark.parametrize("package", sorted(_lower_bounds()))
def test_every_lower_bound_is_a_version_ci_installs(package):
    """torch>=2.11 promises 2.11.0, which a cell installs; numpy>=2.4.6 is the pinned cell's numpy, and so on."""
    bound = _release(_lower_bounds()[package])
    tested = {_release(version) for version in _tested_versions().get(package, set())}
    assert bound in tested, (package, bound, tested)


def test_the_named_packages_have_lower_bounds():
    assert {"torch", "numpy", "numba", "numba-cuda"} <= set(_lower_bounds())


def test_the_torch_range_is_the_one_pyproject_and_ci_declare():
    assert _lower_bounds()["torch"] == _support.dotted(_support.OLDEST_TORCH)
    assert "torch==2.11.0" in _load(ROOT / ".ci" / "matrix.py").CELLS[0].requirements
    newest = {r for cell in _load(ROOT / ".ci" / "matrix.py").CELLS for r in cell.requirements if "torch==" in r}
    assert f"torch=={_support.dotted(_support.NEWEST_TESTED_TORCH)}.0" in newest
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == f">={_support.dotted(_support.OLDEST_PYTHON)}"


@pytest.mark.parametrize(
    ("version", "outcome"),
    [("2.10.2", ImportError), ("1.13.1", ImportError), ("2.11.0+cu130", None), ("2.15.0", None), ("2.16.0", "newer")],
)
def test_torch_versions_outside_the_range(version, outcome):
    if outcome is ImportError:
        with pytest.raises(ImportError, match=r"needs torch >= 2\.11 \(supported: torch 2\.11 to 2\.15\)"):
            _support.check_torch(version)
    elif outcome is None:
        assert _support.check_torch(version) is None
    else:
        assert "tested with torch 2.11 to 2.15" in _support.check_torch(version)


def test_importing_with_an_unsupported_torch_names_the_range():
    code = "import torch; torch.__version__ = '2.10.0'; import pykernels"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "ImportError: pykernels needs torch >= 2.11 (supported: torch 2.11 to 2.15)" in result.stderr


# --- the CUDA half: built where it can be, else skipped with the reason -------------------------------------------


@pytest.fixture
def toolkit(tmp_path, monkeypatch):
    """A fake CUDA 13.0 toolkit (an nvcc that reports its release, cuda_runtime.h, none of the library headers) and
    a fake nvidia-* package folder; CUDA_HOME points at the toolkit."""
    home = tmp_path / "cuda-13.0"
    (home / "bin").mkdir(parents=True)
    (home / "include").mkdir()
    (home / "include" / "cuda_runtime.h").write_text("")
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    nvcc.chmod(0o755)
    nvidia = tmp_path / "site-packages" / "nvidia" / "cu13" / "include"
    nvidia.mkdir(parents=True)
    monkeypatch.setenv("CUDA_HOME", str(home))
    monkeypatch.delenv("PYKERNELS_CUDA", raising=False)
    monkeypatch.setattr(_build, "nvidia_include_dirs", lambda major: [str(nvidia)] if major == "13" else [])
    return SimpleNamespace(home=home, nvidia=nvidia)


def _torch(cuda: str | None):
    return SimpleNamespace(
        __version__="2.11.0" + (f"+cu{cuda.replace('.', '')}" if cuda else "+cpu"), version=SimpleNamespace(cuda=cuda)
    )


CPP_EXTENSION = SimpleNamespace(CUDA_HOME="/usr/local")  # torch's own guess, from a wrapper nvcc on PATH


def test_the_cuda_half_finds_the_headers_of_torchs_nvidia_packages(toolkit):
    for header in _build.CUDA_LIBRARY_HEADERS:
        (toolkit.nvidia / header).write_text("")
    plan = _build.plan_cuda(_torch("13.0"), CPP_EXTENSION)
    assert plan.build and plan.cuda_home == os.path.realpath(toolkit.home)
    assert plan.include_dirs == (str(toolkit.nvidia),)
    assert _build.nvcc_flags(plan.include_dirs)[-2:] == ["-isystem", str(toolkit.nvidia)]


@pytest.mark.parametrize(
    ("torch_cuda", "headers", "why"),
    [
        (None, True, r"is a CPU build"),
        ("12.8", True, r"nvcc in .* is CUDA 13\.0, but torch .* was built with CUDA 12\.8"),
        ("13.0", False, r"lacks cublas_v2\.h, cusparse\.h, cusolverDn\.h"),
    ],
)
def test_a_cuda_half_that_cannot_build_is_skipped_with_the_reason_or_refused_when_forced(
    toolkit, monkeypatch, torch_cuda, headers, why
):
    if headers:
        for header in _build.CUDA_LIBRARY_HEADERS:
            (toolkit.nvidia / header).write_text("")
    plan = _build.plan_cuda(_torch(torch_cuda), CPP_EXTENSION)
    assert not plan.build and re.search(why, plan.reason) and "PYKERNELS_CUDA=0" in plan.reason
    monkeypatch.setenv("PYKERNELS_CUDA", "1")
    with pytest.raises(RuntimeError, match="PYKERNELS_CUDA=1 asks for the CUDA kernels, but .*" + why):
        _build.plan_cuda(_torch(torch_cuda), CPP_EXTENSION)
    monkeypatch.setenv("PYKERNELS_CUDA", "0")
    assert _build.plan_cuda(_torch(torch_cuda), CPP_EXTENSION).reason == "PYKERNELS_CUDA=0"


def test_a_wrapper_nvcc_on_path_leads_to_its_real_toolkit(toolkit, tmp_path, monkeypatch):
    """torch guesses CUDA_HOME from nvcc's folder; a wrapper script in /usr/local/bin hides the toolkit."""
    monkeypatch.delenv("CUDA_HOME")
    monkeypatch.delenv("CUDA_PATH", raising=False)
    wrapper = tmp_path / "bin" / "nvcc"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\necho '#$ TOP={toolkit.home}' >&2\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    assert _build.find_cuda_home("/usr/local") == os.path.realpath(toolkit.home)


@pytest.fixture
def cache_with_plan(monkeypatch, tmp_path):
    """The first-import cache with a stub build: set box[0] to the CUDA plan the next import sees."""
    box = [_build.CudaPlan(True, "a CUDA torch and nvcc", cuda_home="/cuda")]
    monkeypatch.setattr(_extension, "cuda_plan", lambda: box[0])
    monkeypatch.setenv("PYKERNELS_CACHE_DIR", str(tmp_path / "cache"))
    config = {"compiler": "g++", "torch_version": "2.11.0", "cuda_arch_list": None, "torch_cuda_version": "13.0"}
    monkeypatch.setattr(_extension, "build_config", lambda p=None: {**config, "cuda": (p or box[0]).build})
    monkeypatch.setattr(_extension, "_load_library", lambda loadable, path: None)
    monkeypatch.setattr(_extension, "LOADED", {})
    return box


def _stub_library(entry) -> None:
    """What a successful compile leaves: the entry's library (its size and digest are recorded and checked)."""
    (entry / "pykernels_ops.so").write_bytes(b"a stub library")


CPP_EXTENSION_FAILURE = (  # how cpp_extension.load reports a failed compile: its own line, ninja's, then nvcc's
    "Error building extension 'pykernels_ops': [1/9] /usr/local/cuda/bin/nvcc -c moments_cuda.cu\n"
    'FAILED: moments_cuda.cuda.o\nmoments_cuda.cu(12): error: identifier "x" is undefined\n'
)


def test_a_cuda_half_that_fails_to_compile_leaves_the_cpu_half_once(cache_with_plan, capfd):
    """The CUDA entry fails, the CPU entry is built and loaded, the compiler's error is the reason, and the next
    import goes straight to the CPU entry."""
    attempts = []

    def compile_entry(entry, config):
        attempts.append(config["cuda"])
        if config["cuda"]:
            raise RuntimeError(CPP_EXTENSION_FAILURE)
        _stub_library(entry)

    info = _extension.load_cached("test", compile_entry)
    assert attempts == [True, False] and info["backends"] == ["cpu"]
    assert 'moments_cuda.cu(12): error: identifier "x" is undefined' in info["cuda_reason"]
    assert "PYKERNELS_CUDA" in info["cuda_reason"] and "the CUDA kernels failed to compile" in capfd.readouterr().err
    again = _extension.load_cached("test", compile_entry)
    assert attempts == [True, False] and again["backends"] == ["cpu"] and again["cuda_reason"] == info["cuda_reason"]


def test_a_forced_retry_that_succeeds_serves_later_imports(cache_with_plan):
    """The message suggests PYKERNELS_CUDA=1; once that build succeeds (a transient failure: an OOM-killed cicc),
    later default imports load it."""
    failing = [True]

    def compile_entry(entry, config):
        if config["cuda"] and failing[0]:
            raise RuntimeError("Killed signal terminated program cicc")
        _stub_library(entry)

    assert _extension.load_cached("t", compile_entry)["backends"] == ["cpu"]
    failing[0] = False
    cache_with_plan[0] = _build.CudaPlan(True, "forced", forced=True, cuda_home="/cuda")
    assert _extension.load_cached("t", compile_entry)["backends"] == ["cpu", "cuda"]
    cache_with_plan[0] = _build.CudaPlan(True, "default", cuda_home="/cuda")
    assert _extension.load_cached("t", compile_entry)["backends"] == ["cpu", "cuda"]


def test_concurrent_first_imports_compile_a_failing_cuda_half_once(cache_with_plan):
    attempts = []

    def compile_entry(entry, config):
        attempts.append(config["cuda"])
        if config["cuda"]:
            time.sleep(0.5)
            raise RuntimeError("x.cu(1): error: nope")
        _stub_library(entry)

    threads = [threading.Thread(target=_extension.load_cached, args=("t", compile_entry)) for _ in range(4)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert attempts.count(True) == 1, attempts


def test_a_missing_ninja_is_not_recorded_as_a_cuda_failure(cache_with_plan):
    ninja = [False]

    def compile_entry(entry, config):
        if not ninja[0]:
            raise RuntimeError("Ninja is required to load C++ extensions (pip install ninja to get it)")
        _stub_library(entry)

    with pytest.raises(ImportError, match="pip install ninja"):
        _extension.load_cached("t", compile_entry)
    ninja[0] = True  # the user follows the advice
    assert _extension.load_cached("t", compile_entry)["backends"] == ["cpu", "cuda"]


def test_a_cuda_torch_without_a_cuda_build_says_why_at_its_first_import(monkeypatch, tmp_path, capfd):
    reason = "the CUDA toolkit in /cuda lacks cusparse.h (...)"
    monkeypatch.setattr(_extension, "cuda_plan", lambda: _build.CudaPlan(False, reason))
    monkeypatch.setenv("PYKERNELS_CACHE_DIR", str(tmp_path / "cache"))
    config = {"compiler": "g++", "torch_version": "2.11.0", "cuda_arch_list": None, "torch_cuda_version": "13.0"}
    monkeypatch.setattr(_extension, "build_config", lambda p=None: {**config, "cuda": False})
    monkeypatch.setattr(_extension, "LOADED", {})
    _extension.load_cached("t", lambda entry, config: _stub_library(entry))
    assert f"no CUDA kernels: {reason}" in capfd.readouterr().err


@pytest.mark.parametrize("value", ["off", "OFF", "No", " 0", "false "])
def test_switches_read_off_as_off_and_refuse_typos(monkeypatch, value):
    monkeypatch.setenv("PYKERNELS_CUDA", value)
    assert _build.env_flag("PYKERNELS_CUDA") is False
    monkeypatch.setenv("PYKERNELS_DEBUG", "offf")
    with pytest.raises(ValueError, match=r"PYKERNELS_DEBUG='offf': use 1 .* or 0"):
        _build.debug()


@pytest.mark.parametrize("garbage", ["/nonexistent", "/etc/passwd"])
def test_a_cuda_home_that_is_not_a_toolkit_is_named(toolkit, monkeypatch, garbage):
    monkeypatch.setenv("CUDA_HOME", garbage)
    plan = _build.plan_cuda(_torch("13.0"), CPP_EXTENSION)
    assert not plan.build and f"CUDA_HOME={garbage} is not a CUDA toolkit" in plan.reason


def test_the_library_headers_come_from_the_nvidia_packages_of_torchs_cuda_major(tmp_path, monkeypatch):
    """A leftover nvidia/cu13 beside a CUDA 12 torch must not serve CUDA 12 builds."""
    site = tmp_path / "site"
    for folder in ("nvidia/cu13/include", "nvidia/cusparse/include", "nvidia/cublas/include"):
        (site / folder).mkdir(parents=True)
    monkeypatch.syspath_prepend(str(site))
    assert str(site / "nvidia/cu13/include") in _build.nvidia_include_dirs("13")
    cuda_12 = _build.nvidia_include_dirs("12")  # (this environment's own nvidia packages may add theirs)
    assert {str(site / f"nvidia/{library}/include") for library in ("cusparse", "cublas")} <= set(cuda_12)
    assert not any("/cu13/" in folder for folder in cuda_12)


def test_the_first_compiler_error_is_the_compilers_not_cpp_extensions():
    expected = 'moments_cuda.cu(12): error: identifier "x" is undefined'
    assert _build.first_compile_error(CPP_EXTENSION_FAILURE) == expected


def test_an_unreadable_torch_version_is_a_warning_not_a_crash():
    assert "cannot read torch's version 'garbage'" in _support.check_torch("garbage")


def test_info_says_which_halves_were_built_and_why():
    result = subprocess.run(
        [sys.executable, "-m", "pykernels", "info"], capture_output=True, text=True, timeout=300, check=True
    )
    info = json.loads(result.stdout)
    assert "cpu" in info["compiled_backends"]
    built = "cuda" in info["compiled_backends"]
    assert info["cuda_kernels"].startswith("built: " if built else "not built: ")
    assert "recorded no reason" not in info["cuda_kernels"]  # this build recorded why


def test_a_typo_in_the_cuda_switch_is_refused_where_the_prebuilt_extension_would_load(monkeypatch):
    monkeypatch.setenv("PYKERNELS_CUDA", "ture")
    info = {"torch_version": _extension.torch.__version__, "backends": ["cpu"]}
    with pytest.raises(ImportError, match="PYKERNELS_CUDA='ture': use 1"):
        _extension.prebuilt_mismatch(info)
