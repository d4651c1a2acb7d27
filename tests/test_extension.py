"""The build: the extension built at install when it matches torch, else a build on first use in the cache (compiled
once per torch and sources, rebuilt when they change, safe for concurrent first imports)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import pykernels
from pykernels import _build, _extension

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


def _recorded_for_this_torch(**changes) -> dict:
    """What setup.py records for a build of the current sources against the imported torch, with ``changes``."""
    return {
        "torch_version": torch.__version__,
        "torch_git_version": torch.version.git_version,
        "sources": _build.sources_digest(_extension.csrc_dir()),
        **changes,
    }


def test_a_prebuilt_extension_that_does_not_load_is_replaced_by_a_cached_build(monkeypatch):
    def broken_import():
        raise ImportError("pykernels/_C.abi3.so: undefined symbol: _ZN3c104impl3cow23materialize_cow_storageE")

    reason = _cache_load_reason(monkeypatch, _recorded_for_this_torch(), broken_import)
    assert "does not load" in reason and "materialize_cow_storage" in reason


def test_a_prebuilt_extension_of_older_sources_is_replaced_by_a_cached_build(monkeypatch):
    """An editable install whose csrc was edited since: the stale _C must not be loaded."""
    reason = _cache_load_reason(monkeypatch, _recorded_for_this_torch(sources="an older digest"))
    assert "sources changed" in reason
    reason = _cache_load_reason(monkeypatch, _recorded_for_this_torch(torch_git_version="another build"))
    assert "another build of torch" in reason


def test_the_prebuilt_extension_records_the_sources_it_was_built_from():
    assert _extension.prebuilt_mismatch(_extension.recorded_build_info()) is None


FAKE_CONFIG = {
    "torch_version": "2.13.0",
    "torch_cuda_version": None,
    "compiler": "/usr/bin/g++-12 (Debian 12.2.0-14) 12.2.0",
    "sources": "a",
    "cuda": False,
    "cuda_arch_list": None,
}


def _fake_build(monkeypatch, tmp_path, config):
    """The cache with a stub compiler: returns the list of entries it compiled."""
    compiled = []

    def compile_entry(entry, cfg):
        compiled.append(entry.name)
        return entry / "pykernels_ops.so"

    monkeypatch.setenv("PYKERNELS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_extension, "build_config", lambda plan=None: dict(config))
    monkeypatch.setattr(torch.ops, "load_library", lambda path: None)
    return compiled, compile_entry


def test_the_cache_compiles_once_per_torch_and_sources(monkeypatch, tmp_path):
    config = dict(FAKE_CONFIG)
    compiled, compile_entry = _fake_build(monkeypatch, tmp_path, config)
    _extension.load_cached("test", compile_entry)
    _extension.load_cached("test", compile_entry)  # unchanged: a cache hit
    assert len(compiled) == 1
    for change in ({"torch_version": "2.14.0"}, {"sources": "b"}):
        monkeypatch.setattr(_extension, "build_config", lambda plan=None, change=change: {**config, **change})
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

    _fake_build(monkeypatch, tmp_path, FAKE_CONFIG)
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
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    private = tmp_path / "tmp" / f"pykernels-cache-{os.getuid()}"
    assert _extension.cache_dir() == private and stat.S_IMODE(private.stat().st_mode) == 0o700


@pytest.mark.parametrize("planted", ["writable by others", "a link"])
def test_a_temp_cache_folder_someone_else_could_write_is_refused(monkeypatch, tmp_path, planted):
    """In a shared temp dir, anyone may create pykernels-cache-<uid> first and plant a library in it."""
    monkeypatch.delenv("PYKERNELS_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    folder = tmp_path / f"pykernels-cache-{os.getuid()}"
    if planted == "a link":
        (tmp_path / "elsewhere").mkdir()
        folder.symlink_to(tmp_path / "elsewhere")
    else:
        folder.mkdir()
        folder.chmod(0o777)
    with pytest.raises(ImportError, match=r"not a private folder.*PYKERNELS_CACHE_DIR"):
        _extension.cache_dir()


def test_a_cache_folder_that_cannot_be_made_names_the_variable(monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("PYKERNELS_CACHE_DIR", str(tmp_path / "a-file"))
    monkeypatch.setattr(_extension, "build_config", lambda plan=None: dict(FAKE_CONFIG))
    with pytest.raises(ImportError, match=r"cannot use .*a-file as its kernel cache.*PYKERNELS_CACHE_DIR"):
        _extension.load_cached("test", lambda entry, config: pytest.fail("nothing must compile"))


def test_a_killed_compile_does_not_block_the_next_one(monkeypatch, tmp_path):
    """cpp_extension's lock file survives a SIGKILLed compile; the next compile must not wait on it forever."""
    compiled, compile_entry = _fake_build(monkeypatch, tmp_path, FAKE_CONFIG)
    entry = tmp_path / "cache" / _extension.cache_key(FAKE_CONFIG)
    entry.mkdir(parents=True)
    (entry / "lock").write_text("")  # what the killed compile left

    def checking_compile(entry, config):
        assert not (entry / "lock").exists()
        return compile_entry(entry, config)

    _extension.load_cached("test", checking_compile)
    assert compiled == [entry.name] and (entry / "complete.json").exists()


def test_a_moved_cache_loads_its_own_library(monkeypatch, tmp_path):
    compiled, compile_entry = _fake_build(monkeypatch, tmp_path, FAKE_CONFIG)
    _extension.load_cached("test", compile_entry)
    shutil.move(tmp_path / "cache", tmp_path / "moved")
    monkeypatch.setenv("PYKERNELS_CACHE_DIR", str(tmp_path / "moved"))
    loaded = []
    monkeypatch.setattr(torch.ops, "load_library", loaded.append)
    _extension.load_cached("test", compile_entry)
    assert len(compiled) == 1 and loaded == [str(tmp_path / "moved" / compiled[0] / "pykernels_ops.so")]


def test_without_a_compiler_the_entry_built_with_one_is_used(monkeypatch, tmp_path):
    """PATH without c++ at run time (cron, a runtime container): the build made where there was one still serves."""
    compiled, compile_entry = _fake_build(monkeypatch, tmp_path, FAKE_CONFIG)
    _extension.load_cached("test", compile_entry)
    monkeypatch.setattr(_extension, "build_config", lambda plan=None: {**FAKE_CONFIG, "compiler": None})
    _extension.load_cached("test", compile_entry)
    assert len(compiled) == 1


def test_the_compiler_is_identified_by_what_runs_not_by_its_name(monkeypatch):
    import shutil as shell

    if not (shell.which("c++") and shell.which("g++")):
        pytest.skip("c++ and g++ are not both on PATH")
    if os.path.realpath(shell.which("c++")) != os.path.realpath(shell.which("g++")):
        pytest.skip("c++ is not g++ here")
    monkeypatch.setenv("CXX", "c++")
    by_cxx = _extension._compiler_identity()
    monkeypatch.setenv("CXX", "g++")
    assert _extension._compiler_identity() == by_cxx is not None
    monkeypatch.setenv("CXX", "no-such-compiler-anywhere")
    assert _extension._compiler_identity() is None
