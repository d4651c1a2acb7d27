"""The build: the extension built at install when it matches torch, else a build on first use in the cache (compiled
once per torch and sources, rebuilt when they change, safe for concurrent first imports)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import pykernels
from pykernels import _extension

ROOT = Path(__file__).resolve().parents[1]


def test_recorded_build_matches_this_torch():
    info = _extension.recorded_build_info()
    assert info is not None and info["torch_version"] == torch.__version__
    assert "cpu" in info["backends"]


def test_cuda_backend_built_wherever_a_gpu_is_visible():
    """A visible GPU with no CUDA kernels built is a broken install, not a skip."""
    if torch.cuda.is_available():
        assert "cuda" in _extension.recorded_build_info()["backends"]
        x = torch.ones(3, device="cuda")
        assert pykernels.dot(x, x).device.type == "cuda"


def _cache_load_reason(monkeypatch, recorded, import_prebuilt=None) -> str:
    """The reason load() gives for taking the cache path (the cache itself stubbed out)."""
    reasons = []
    monkeypatch.setattr(_extension, "recorded_build_info", lambda: recorded)
    monkeypatch.setattr(_extension, "load_cached", lambda reason: reasons.append(reason) or {})
    _extension.load(import_prebuilt or (lambda: pytest.fail("the prebuilt extension must not be imported")))
    return reasons[0]


def test_a_prebuilt_extension_for_another_torch_is_replaced_by_a_cached_build(monkeypatch):
    """A torch upgrade after a --no-build-isolation install: no ABI error, a build for the new torch instead."""
    reason = _cache_load_reason(monkeypatch, {"torch_version": "2.0.0"})
    assert "built at install is for torch 2.0.0" in reason


def test_no_prebuilt_extension_means_a_cached_build(monkeypatch):
    assert "no extension was built at install" in _cache_load_reason(monkeypatch, None)


def test_a_prebuilt_extension_that_does_not_load_is_replaced_by_a_cached_build(monkeypatch):
    def broken_import():
        raise ImportError("pykernels/_C.abi3.so: undefined symbol: _ZN3c104impl3cow23materialize_cow_storageE")

    reason = _cache_load_reason(monkeypatch, {"torch_version": torch.__version__}, broken_import)
    assert "does not load" in reason and "materialize_cow_storage" in reason


def _fake_build(monkeypatch, tmp_path, config):
    """The cache with a stub compiler: returns the list of entries it compiled."""
    compiled = []

    def compile_entry(entry, cfg):
        compiled.append(entry.name)
        return entry / "pykernels_ops.so"

    monkeypatch.setenv("PYKERNELS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_extension, "build_config", lambda: dict(config))
    monkeypatch.setattr(torch.ops, "load_library", lambda path: None)
    return compiled, compile_entry


def test_the_cache_compiles_once_per_torch_and_sources(monkeypatch, tmp_path):
    config = {
        "torch_version": "2.13.0",
        "torch_cuda_version": None,
        "sources": "a",
        "cuda": False,
        "cuda_arch_list": None,
    }
    compiled, compile_entry = _fake_build(monkeypatch, tmp_path, config)
    _extension.load_cached("test", compile_entry)
    _extension.load_cached("test", compile_entry)  # unchanged: a cache hit
    assert len(compiled) == 1
    for change in ({"torch_version": "2.14.0"}, {"sources": "b"}):
        monkeypatch.setattr(_extension, "build_config", lambda change=change: {**config, **change})
        _extension.load_cached("test", compile_entry)
    assert len(compiled) == 3 and len(set(compiled)) == 3


def test_the_cache_key_follows_every_source_file(monkeypatch, tmp_path):
    csrc = tmp_path / "csrc"
    shutil.copytree(_extension.csrc_dir(), csrc)
    monkeypatch.setattr(_extension, "csrc_dir", lambda: csrc)
    before = _extension.cache_key(_extension.build_config())
    assert _extension.cache_key(_extension.build_config()) == before
    header = csrc / "common" / "poly_math.h"
    header.write_text(header.read_text() + "\n// a change\n")
    assert _extension.cache_key(_extension.build_config()) != before


def test_a_failed_compile_names_what_is_needed(monkeypatch, tmp_path):
    def failing_compile(entry, config):
        raise RuntimeError("ninja: build stopped: subcommand failed")

    _fake_build(
        monkeypatch, tmp_path, {"torch_version": "x", "torch_cuda_version": None, "cuda": False, "cuda_arch_list": None}
    )
    with pytest.raises(ImportError, match=r"C\+\+ compiler and ninja.*pip install --no-build-isolation \."):
        _extension.load_cached("test", failing_compile)


def test_setup_without_torch_installs_the_sources_for_a_build_on_first_import(tmp_path):
    """An isolated build (no torch in the build env) succeeds, compiling nothing, and says what happens next."""
    code = (
        "import sys, runpy; sys.modules['torch'] = None; sys.argv = ['setup.py', '--version'];"
        "runpy.run_path('setup.py', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "the kernels compile on first import" in result.stderr
    assert result.stdout.strip() == pykernels.__version__


def test_extension_is_one_abi3_module_without_libtorch_python():
    built = list(Path(pykernels.__file__).parent.glob("_C*.so"))
    assert len(built) == 1 and built[0].name == "_C.abi3.so"
    readelf = subprocess.run(["readelf", "-d", str(built[0])], capture_output=True, text=True)
    if readelf.returncode != 0:
        pytest.skip("readelf not available")
    assert "libtorch_python" not in readelf.stdout


def test_the_cache_goes_to_a_writable_place_without_home(monkeypatch, tmp_path):
    """PYKERNELS_CACHE_DIR wins; then the user's cache folder; with no HOME (or a read-only one) the temp dir."""
    monkeypatch.setenv("PYKERNELS_CACHE_DIR", str(tmp_path / "chosen"))
    assert _extension.cache_dir() == tmp_path / "chosen"
    monkeypatch.delenv("PYKERNELS_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _extension.cache_dir() == tmp_path / "home" / ".cache" / "pykernels"
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert _extension.cache_dir() == tmp_path / "tmp" / f"pykernels-cache-{os.getuid()}"
