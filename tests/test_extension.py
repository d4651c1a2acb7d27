"""The build: the extension built at install when it matches torch, else a build on first use in the cache (compiled
once per torch and sources, rebuilt when they change, safe for concurrent first imports)."""

from __future__ import annotations

import errno
import json
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
        "library": _build.library_record(next(_extension.PACKAGE.glob("_C*.so"))),
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
        library = entry / "pykernels_ops.so"
        library.write_bytes(b"a stand-in library, compile %d" % len(compiled))
        return library

    monkeypatch.setenv("PYKERNELS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_extension, "build_config", lambda plan=None: dict(config))
    monkeypatch.setattr(_extension, "_load_library", lambda loadable, path: None)
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
    monkeypatch.setattr(_extension, "_load_library", lambda loadable, path: loaded.append(str(path)))
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


# --- damaged builds: checked before they are loaded (loading a library cut short is a SIGBUS, no message) -----------


def _cut_short(path: Path, keep: float = 0.5) -> None:
    os.truncate(path, int(path.stat().st_size * keep))


def _cut_into_its_code(library: Path) -> None:
    """A library cut short where it is loaded: its first 1/16, inside the code (a -g build's second half is debug
    information, which is never loaded). The import used to die of SIGBUS (exit 135) loading it."""
    _cut_short(library, keep=1 / 16)


def _replace(path: Path, make) -> None:
    path.unlink()
    make(path)


DAMAGE = {
    "library cut short": lambda entry: _cut_into_its_code(entry / "pykernels_ops.so"),
    "library emptied": lambda entry: os.truncate(entry / "pykernels_ops.so", 0),
    "library of the same size, other bytes": lambda entry: (entry / "pykernels_ops.so").write_bytes(
        bytes(b ^ 1 for b in (entry / "pykernels_ops.so").read_bytes())
    ),
    "library missing": lambda entry: (entry / "pykernels_ops.so").unlink(),
    # (reading either would hang the import: a FIFO waits for a writer, /dev/zero never ends)
    "a FIFO in the library's place": lambda entry: _replace(entry / "pykernels_ops.so", os.mkfifo),
    "a link to /dev/zero in the library's place": lambda entry: _replace(
        entry / "pykernels_ops.so", lambda path: os.symlink("/dev/zero", path)
    ),
    "complete.json cut short": lambda entry: _cut_short(entry / "complete.json"),
    "no recorded digest (an older pykernels)": lambda entry: (entry / "complete.json").write_text(
        json.dumps({k: v for k, v in json.loads((entry / "complete.json").read_text()).items() if k != "library"})
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_entry_is_rebuilt_on_the_next_load_and_loaded_after(monkeypatch, tmp_path, capfd, damage):
    compiled, compile_entry = _fake_build(monkeypatch, tmp_path, FAKE_CONFIG)
    loaded = []
    monkeypatch.setattr(_extension, "_load_library", lambda loadable, path: loaded.append(str(path)))
    _extension.load_cached("test", compile_entry)
    entry = tmp_path / "cache" / compiled[0]
    (entry / "ninja-output.o").write_text("")  # a stale object: a rebuild starts from an empty entry
    DAMAGE[damage](entry)
    capfd.readouterr()
    _extension.load_cached("test", compile_entry)  # the first load after the damage: rebuilt, not loaded
    said = capfd.readouterr().err
    assert compiled == [entry.name] * 2 and loaded == []
    assert f"the cached build in {entry} is not the one that was built" in said and "rebuild" in said
    assert not (entry / "ninja-output.o").exists()
    assert (entry / "pykernels_ops.so").read_bytes() == b"a stand-in library, compile 2"
    _extension.load_cached("test", compile_entry)  # later loads: the rebuilt entry, checked, loaded
    assert compiled == [entry.name] * 2 and loaded == [str(entry / "pykernels_ops.so")]


def test_a_damaged_entry_linked_from_the_cache_is_unlinked_and_rebuilt(monkeypatch, tmp_path):
    compiled, compile_entry = _fake_build(monkeypatch, tmp_path, FAKE_CONFIG)
    _extension.load_cached("test", compile_entry)
    entry = tmp_path / "cache" / compiled[0]
    shutil.move(entry, tmp_path / "elsewhere")
    entry.symlink_to(tmp_path / "elsewhere")
    _cut_into_its_code(entry / "pykernels_ops.so")
    _extension.load_cached("test", compile_entry)
    assert compiled == [entry.name] * 2 and entry.is_dir() and not entry.is_symlink()
    assert (tmp_path / "elsewhere" / "pykernels_ops.so").exists()  # what the link pointed to is left alone


def test_a_cache_entry_that_cannot_be_read_is_an_import_error_naming_it_and_is_kept(monkeypatch, tmp_path):
    """An I/O or permission error while checking is not damage: deleting the entry would pull it from under another
    process loading it. The import fails naming the file and the error, and the entry stays."""
    compiled, compile_entry = _fake_build(monkeypatch, tmp_path, FAKE_CONFIG)
    _extension.load_cached("test", compile_entry)
    entry = tmp_path / "cache" / compiled[0]

    def unreadable(file, name):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(_build, "library_record_of", unreadable)
    with pytest.raises(ImportError, match=f"{entry / 'pykernels_ops.so'} cannot be read .*errno {errno.EIO}"):
        _extension.load_cached("test", compile_entry)
    assert compiled == [entry.name] and (entry / "pykernels_ops.so").exists()


def test_the_library_loaded_is_the_one_checked_even_if_replaced_in_between(monkeypatch, tmp_path):
    compiled, compile_entry = _fake_build(monkeypatch, tmp_path, FAKE_CONFIG)
    _extension.load_cached("test", compile_entry)
    library = tmp_path / "cache" / compiled[0] / "pykernels_ops.so"
    checked_bytes = library.read_bytes()
    record_of = _build.library_record_of

    def check_then_replace(file, name):  # another process swaps the file right after the check
        record = record_of(file, name)
        (library.parent / "swap").write_bytes(b"not the library that was checked")
        os.replace(library.parent / "swap", library)
        return record

    loaded = []
    monkeypatch.setattr(_build, "library_record_of", check_then_replace)
    monkeypatch.setattr(_extension, "_load_library", lambda loadable, path: loaded.append(Path(loadable).read_bytes()))
    _extension.load_cached("test", compile_entry)
    assert loaded == [checked_bytes] and compiled == [library.parent.name]


def test_a_damaged_cache_entry_that_cannot_be_rebuilt_is_an_import_error_naming_it(monkeypatch, tmp_path):
    compiled, compile_entry = _fake_build(monkeypatch, tmp_path, FAKE_CONFIG)
    _extension.load_cached("test", compile_entry)
    library = tmp_path / "cache" / compiled[0] / "pykernels_ops.so"
    _cut_into_its_code(library)

    def failing_compile(entry, config):
        raise RuntimeError("no compiler")

    for _ in range(2):  # the first load after the damage, and a later one
        with pytest.raises(ImportError, match="could not compile") as raised:
            _extension.load_cached("test", failing_compile)
    message = str(raised.value)
    assert "C++ compiler" in message and "pip install --no-build-isolation" in message


def test_a_damaged_prebuilt_extension_is_not_imported(monkeypatch):
    """The extension built at install is checked against the size and sha256 setup.py recorded; a damaged one (or
    one with no record to check) goes to the cache instead, with the reason naming the file."""
    recorded = _recorded_for_this_torch(library={"file": "_C.abi3.so", "size": 1, "sha256": "0" * 64})
    reason = _cache_load_reason(monkeypatch, recorded)
    assert f"{_extension.PACKAGE / '_C.abi3.so'} is damaged" in reason and "1 were built" in reason
    reason = _cache_load_reason(monkeypatch, _recorded_for_this_torch(library=None))
    assert "no recorded size and sha256" in reason and "reinstall" in reason


def test_the_prebuilt_extension_records_its_library():
    info = _extension.recorded_build_info()
    assert info["library"]["file"] == "_C.abi3.so" and _extension._prebuilt_damage(info) is None


IMPORT_AND_RUN = (
    "import torch, pykernels; x = torch.linspace(-1, 1, 101, dtype=torch.float64); "
    "assert torch.allclose(pykernels.dot(x, x), torch.dot(x, x), rtol=1e-12); "
    "print(pykernels.__file__, pykernels.build_info()['extension'])"
)


def _package_copy(tmp_path: Path, prebuilt: bool) -> Path:
    """pykernels copied with its sources (as a plain install has them), with or without the extension built at
    install; returns the folder to put on PYTHONPATH."""
    site = tmp_path / "site"
    skip = ["__pycache__", "study"] + ([] if prebuilt else ["_C*.so", "_build_info.json"])
    shutil.copytree(_extension.PACKAGE, site / "pykernels", ignore=shutil.ignore_patterns(*skip))
    shutil.copytree(_extension.csrc_dir(), site / "pykernels" / "_csrc")
    return site


def _import_twice(site: Path, tmp_path: Path, timeout: float = 300, **env) -> list[subprocess.CompletedProcess]:
    """The first import after the damage, then a later one, each in a fresh process; by default no compiler on hand
    (CXX names none), so a damaged build cannot be rebuilt and must be an ImportError."""
    environment = {**os.environ, "PYTHONPATH": str(site), "CXX": "no-such-compiler", **env}
    return [
        subprocess.run(
            [sys.executable, "-c", IMPORT_AND_RUN],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        for _ in range(2)
    ]


def test_a_cut_short_cached_library_is_an_import_error_not_a_sigbus(tmp_path):
    """A real library cut short in a cache entry whose complete.json is in place (a killed copy of the cache): the
    import used to die of SIGBUS (exit 135) with no message; now it is found damaged before it is loaded."""
    site = _package_copy(tmp_path, prebuilt=False)
    config = _extension.build_config()
    entry = tmp_path / "cache" / _extension.cache_key(config)
    entry.mkdir(parents=True)
    shutil.copy(next(_extension.PACKAGE.glob("_C*.so")), entry / "pykernels_ops.so")  # the same registrations
    _extension._mark_complete(entry, config)
    whole = _import_twice(site, tmp_path, PYKERNELS_CACHE_DIR=str(tmp_path / "cache"))
    for result in whole:  # the entry as written: it loads (found as the build of the compiler that is gone)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"compiled on first use into {entry}" in result.stdout
    _cut_into_its_code(entry / "pykernels_ops.so")
    first, later = _import_twice(site, tmp_path, PYKERNELS_CACHE_DIR=str(tmp_path / "cache"))
    assert first.returncode == 1, first.stderr[-3000:]  # an exception, not a signal (-7; 135 from a shell)
    assert f"the cached build in {entry} is not the one that was built" in first.stderr
    assert "ImportError: pykernels could not compile its kernels" in first.stderr
    assert f"{entry / 'pykernels_ops.so'} is damaged" in first.stderr and "C++ compiler" in first.stderr
    assert later.returncode == 1 and "ImportError: pykernels could not compile" in later.stderr, later.stderr[-3000:]


def test_a_cut_short_prebuilt_extension_is_not_imported(tmp_path):
    """The extension built at install, cut short after setup.py recorded it: not imported (SIGBUS), the cache
    path instead; with no compiler, an ImportError naming the file."""
    site = _package_copy(tmp_path, prebuilt=True)
    built = next((site / "pykernels").glob("_C*.so"))
    info = {**_extension.recorded_build_info(), "library": _build.library_record(built)}  # as setup.py writes it
    (site / "pykernels" / "_build_info.json").write_text(json.dumps(info))
    cache = {"PYKERNELS_CACHE_DIR": str(tmp_path / "cache")}
    for result in _import_twice(site, tmp_path, **cache):
        assert result.returncode == 0 and "built at install" in result.stdout, result.stderr[-3000:]
    _cut_into_its_code(built)
    for result in _import_twice(site, tmp_path, **cache):
        assert result.returncode == 1, result.stderr[-3000:]
        assert f"the extension built at install does not match its record: {built} is damaged" in result.stderr


@pytest.mark.slow
def test_a_cut_short_cached_library_is_rebuilt_by_the_next_import_and_loaded_after(tmp_path):
    """With a compiler: the first import after the damage rebuilds the entry (a real compile), later ones load it."""
    site = _package_copy(tmp_path, prebuilt=False)
    config = _extension.build_config()
    entry = tmp_path / "cache" / _extension.cache_key(config)
    entry.mkdir(parents=True)
    shutil.copy(next(_extension.PACKAGE.glob("_C*.so")), entry / "pykernels_ops.so")
    _extension._mark_complete(entry, config)
    _cut_into_its_code(entry / "pykernels_ops.so")
    compiler = os.environ.get("CXX", "c++")  # (a real one: this test rebuilds)
    runs = _import_twice(site, tmp_path, timeout=1800, CXX=compiler, PYKERNELS_CACHE_DIR=str(tmp_path / "cache"))
    for result in runs:
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"compiled on first use into {entry}" in result.stdout
    assert "is not the one that was built" in runs[0].stderr and "compiled in" in runs[0].stderr
    assert "compiling" not in runs[1].stderr and not _extension._entry_damage(entry)


def test_a_descriptor_name_another_library_was_loaded_by_still_loads_the_checked_file(tmp_path):
    """The loader knows libraries by the name they were loaded by: a library once loaded as /proc/self/fd/N would be
    handed back for the next file opened as fd N. _load_library then loads the checked file by its path."""
    script = """
import ctypes, os, sys
from pathlib import Path
from pykernels import _extension
first, second = (Path(name) for name in sys.argv[1:])
descriptor = os.open(first, os.O_RDONLY)
ctypes.CDLL(f"/proc/self/fd/{descriptor}")
os.close(descriptor)
again = os.open(second, os.O_RDONLY)
assert again == descriptor
_extension._load_library(f"/proc/self/fd/{again}", second)
print(_extension._is_mapped(os.stat(second), second))
"""
    folders = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib")
    found = [sorted(p for folder in folders for p in Path(folder).glob(f"lib{name}.so.*")) for name in ("bz2", "lzma")]
    libraries = [paths[0] if paths else None for paths in found]
    if not Path("/proc/self/maps").exists() or None in libraries:
        pytest.skip("needs /proc and libbz2 and liblzma")
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, libraries)], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "True", result.stderr
