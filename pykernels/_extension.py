"""Loading the compiled extension: the one built at install when it matches the imported torch, else one compiled
on first use, against exactly that torch, into a cache.

The cache key covers everything the build depends on: torch's version (and git revision) and CUDA version, the
Python the build compiles against, the sources (a hash of every file under csrc), the compiler and its flags, the
CUDA archs, and (for -march=native) the CPU. An upgraded torch, a changed source or another CPU therefore finds no
entry and compiles one; an unchanged setup loads its entry in a fraction of a second. Concurrent first imports wait
on a file lock (released by the OS if its holder dies) and compile once; a compile killed midway is resumed by the
next import. The cache folder: ``PYKERNELS_CACHE_DIR``, else ``$XDG_CACHE_HOME/pykernels`` or ``~/.cache/pykernels``,
else (read-only or HOME-less) a private folder (mode 700, owned by the user, checked) in the system temp dir.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from . import _build, _environ, _folders

PACKAGE = Path(__file__).resolve().parent
_BUILD_INFO_PATH = PACKAGE / "_build_info.json"
_LIBRARY_NAME = "pykernels_ops"
_COMPLETE = "complete.json"  # written last into a cache entry: its presence means the entry is whole


def recorded_build_info() -> dict[str, Any] | None:
    """What setup.py recorded when it built the extension module at install, or None if it built none."""
    try:
        info = json.loads(_BUILD_INFO_PATH.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None  # (a damaged record: no prebuilt extension to trust)


def prebuilt_mismatch(info: dict[str, Any]) -> str | None:
    """Why the extension built at install cannot serve the imported torch and the current sources, or None."""
    if info.get("torch_version") != torch.__version__:
        return f"the extension built at install is for torch {info.get('torch_version')}"
    if info.get("torch_git_version") not in (None, getattr(torch.version, "git_version", None)):
        return f"the extension built at install is for another build of torch {torch.__version__}"
    try:
        wants_cuda = _build.env_flag("PYKERNELS_CUDA")
    except ValueError as error:  # a typo is refused on every route, the prebuilt one included
        raise ImportError(f"pykernels: {error}") from error
    if wants_cuda and "cuda" not in info.get("backends", []):
        return "PYKERNELS_CUDA=1 asks for the CUDA kernels, which the extension built at install lacks"
    try:
        sources = _build.sources_digest(csrc_dir())
    except ImportError:  # a package copied without its sources: nothing to compare with, nor to rebuild from
        return None
    if info.get("sources") != sources:  # e.g. csrc edited after an editable install
        return "the sources changed since the extension was built at install"
    return None


def _unreadable(path: Path, error: OSError) -> ImportError:
    """A library or record that exists but cannot be read (permissions, I/O): an error naming it, never taken for
    damage, which would delete a cache entry that another process may be loading."""
    return ImportError(
        f"pykernels: {path} cannot be read ({error.strerror or error}, errno {error.errno}): fix its permissions or "
        "the disk, or set PYKERNELS_CACHE_DIR to another folder"
    )


@contextlib.contextmanager
def checked_library(path: Path, recorded: object) -> Iterator[tuple[str | None, str]]:
    """Open the library at ``path`` and check it against ``recorded`` (``_build.library_record``): yields (why it is
    not the library that was built, or None; the path to load it by). It stays open meanwhile, and the path to load
    names the open file (/proc/self/fd), so what is loaded is what was checked even if the file is replaced between
    the two (replaced, that is renamed over: one written over in place after the check can still crash the process).
    Checked before every load, since loading a library cut short kills the process with SIGBUS. A missing
    file, one that is not a regular file (a FIFO or a device there would hang the read) and a size or digest that
    differ are damage; any other OSError is an ImportError naming the file."""
    if not isinstance(recorded, dict) or "size" not in recorded or "sha256" not in recorded:
        yield f"{path} has no recorded size and sha256 to check it against (built by an older pykernels)", str(path)
        return
    try:  # (O_NONBLOCK: opening a FIFO for reading would wait for a writer)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        yield f"{path} is missing", str(path)
        return
    except OSError as error:
        raise _unreadable(path, error) from error
    with os.fdopen(descriptor, "rb") as file:
        try:
            damage = _library_damage(path, recorded, file)
        except OSError as error:
            raise _unreadable(path, error) from error
        by_descriptor = f"/proc/self/fd/{descriptor}"
        yield damage, by_descriptor if os.path.exists(by_descriptor) else str(path)


def _library_damage(path: Path, recorded: dict[str, Any], file: BinaryIO) -> str | None:
    if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
        return f"{path} is not a regular file"
    found = _build.library_record_of(file, path.name)
    if found["size"] != recorded["size"]:
        return (
            f"{path} is damaged: {found['size']} bytes where {recorded['size']} were built (cut short by a full "
            "disk or an interrupted copy?)"
        )
    if found["sha256"] != recorded["sha256"]:
        return f"{path} is damaged: its sha256 is not the one recorded when it was built"
    return None


def library_damage(path: Path, recorded: object) -> str | None:
    """Why the library at ``path`` is not the one recorded when it was built, or None (see checked_library)."""
    with checked_library(path, recorded) as (damage, _):
        return damage


def _prebuilt_damage(info: dict[str, Any]) -> str | None:
    """Why the extension built at install must not be imported (damaged, or no record to check), or None."""
    recorded = info.get("library")
    name = recorded.get("file") if isinstance(recorded, dict) else None
    if not isinstance(name, str) or "/" in name or not name.startswith("_C"):
        return "the extension built at install has no recorded size and sha256 to check (reinstall pykernels)"
    try:
        damage = library_damage(PACKAGE / name, recorded)
    except ImportError as error:  # (unreadable: the cache serves instead)
        damage = str(error)
    if damage is not None:
        return f"the extension built at install does not match its record: {damage}"
    # The file checked must be the one imported: Python prefers _C.cpython-*.so to _C.abi3.so beside it.
    spec = importlib.util.find_spec("pykernels._C")
    origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    if origin != (PACKAGE / name).resolve():
        return f"pykernels._C would be imported from {origin}, not from the checked {PACKAGE / name}"
    return None


def _import_prebuilt() -> None:
    importlib.import_module("pykernels._C")  # runs the TORCH_LIBRARY registrations


def load(import_prebuilt=_import_prebuilt) -> dict[str, Any]:
    """Register pykernels' operators: from the prebuilt extension if it was built for this torch and loads, else
    from the cache (compiling the entry first if there is none). Returns what the loaded build was built with."""
    info = recorded_build_info()
    if info is None:
        reason = "no extension was built at install (a plain pip install)"
    elif mismatch := prebuilt_mismatch(info) or _prebuilt_damage(info):
        reason = mismatch
    else:
        try:
            import_prebuilt()
            LOADED.update(info, source="built at install")
            return LOADED
        except ImportError as error:  # e.g. an undefined symbol: the ABI moved under the same version string
            reason = f"the extension built at install does not load ({error})"
    return load_cached(reason)


LOADED: dict[str, Any] = {}  # what load() loaded (build_info reports it)


# --- the cache ----------------------------------------------------------------------------------------------------


def csrc_dir() -> Path:
    """The C++/CUDA sources: installed with the package, or a source checkout's csrc (editable installs)."""
    for candidate in (PACKAGE / "_csrc", PACKAGE.parent / "csrc"):
        if (candidate / "ops.cpp").exists():
            return candidate
    raise ImportError(
        "pykernels' C++ sources are missing (neither pykernels/_csrc nor csrc/ found): reinstall pykernels"
    )


def cache_dir() -> Path:
    """Where compiled builds are kept: PYKERNELS_CACHE_DIR, else the user's cache folder, else a private folder in
    the temp dir."""
    if os.environ.get("PYKERNELS_CACHE_DIR"):
        return Path(os.environ["PYKERNELS_CACHE_DIR"]).expanduser().absolute()
    candidates = []
    if os.environ.get("XDG_CACHE_HOME"):
        candidates.append(Path(os.environ["XDG_CACHE_HOME"]) / "pykernels")
    if os.environ.get("HOME"):
        candidates.append(Path(os.environ["HOME"]) / ".cache" / "pykernels")
    for candidate in candidates:
        if _folders.writable(candidate):
            return candidate
    return _folders.private_temp_folder("pykernels-cache", "PYKERNELS_CACHE_DIR")


def _compiler_identity() -> str | None:
    """The C++ compiler as the build will run it: its resolved path and version (not the name it is called by, so
    c++ and g++ are the same compiler); None when there is none to run."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        return None
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first_line = version.split("\n")[0].split(" ", 1)  # "g++ (Debian 12.2.0-14) 12.2.0": drop the program name
    return f"{os.path.realpath(compiler)} {first_line[-1]}"


def _cpu_identity() -> str:
    """The CPU, where -march=native makes the build specific to it."""
    if _build.cpu_arch() != "native":
        return ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "|".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))


def cuda_plan() -> _build.CudaPlan:
    """Whether this torch and machine can compile the CUDA half, and why (see _build.plan_cuda)."""
    from torch.utils import cpp_extension

    return _build.plan_cuda(torch, cpp_extension)


def build_config(plan: _build.CudaPlan | None = None) -> dict[str, Any]:
    """Everything a build depends on (the cache key is its hash)."""
    plan = cuda_plan() if plan is None else plan
    use_cuda = plan.build
    return {
        "torch_version": torch.__version__,
        "torch_git_version": getattr(torch.version, "git_version", None),
        "torch_cuda_version": torch.version.cuda,
        "python": sys.implementation.cache_tag,
        "machine": platform.machine(),
        "cpu": hashlib.sha256(_cpu_identity().encode()).hexdigest()[:16],
        "compiler": _compiler_identity(),
        "sources": _build.sources_digest(csrc_dir()),
        "cuda": use_cuda,
        "cuda_arch_list": _build.cuda_arch_list(torch) if use_cuda else None,
        "cxx_flags": _build.cxx_flags(),
        "nvcc_flags": _build.nvcc_flags(plan.include_dirs) if use_cuda else None,
        "cuda_home": plan.cuda_home if use_cuda else None,
    }


def cache_key(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:24]


@contextlib.contextmanager
def _exclusive(lock_path: Path, waiting_message: str):
    """A lock across processes, released by the OS when its holder exits, however it exits. Yields whether it is
    held (False where there is no fcntl: cpp_extension's own build lock still serializes the compile)."""
    try:
        lock = open(lock_path, "w")
    except OSError as error:
        raise ImportError(
            f"pykernels: cannot compile into {lock_path.parent} ({error}): set PYKERNELS_CACHE_DIR to a writable folder"
        ) from error
    with lock:
        try:
            import fcntl
        except ImportError:
            yield False
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(waiting_message)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _say(message: str) -> None:
    print(f"pykernels: {message}", file=sys.stderr, flush=True)


def compile_into(entry: Path, config: dict[str, Any]) -> Path:
    """Compile the extension for `config` into the folder `entry` (torch.utils.cpp_extension.load, ninja) and load it;
    returns the library's path."""
    from torch.utils import cpp_extension

    # ninja comes with pykernels into this Python's bin folder, which is not on PATH when the venv is not activated
    bin_folders = [os.path.dirname(sys.executable)]
    with contextlib.suppress(ImportError, AttributeError):
        import ninja

        bin_folders.insert(0, ninja.BIN_DIR)
    variables = {"PATH": os.pathsep.join([*bin_folders, os.environ.get("PATH", "")])}
    if config["cuda"]:
        variables["TORCH_CUDA_ARCH_LIST"] = config["cuda_arch_list"]
    with _environ.scoped(variables), _build.cuda_home_for_build(cpp_extension, config["cuda_home"]):
        cpp_extension.load(
            name=_LIBRARY_NAME,
            sources=[str(path) for path in _build.sources(csrc_dir(), config["cuda"])],
            extra_cflags=config["cxx_flags"],
            extra_cuda_cflags=config["nvcc_flags"],
            with_cuda=config["cuda"],
            build_directory=str(entry),
            is_python_module=False,
        )
    return _library(entry)


def _library(entry: Path) -> Path:
    """An entry's library: always inside the entry (a cache moved or copied elsewhere still loads its own)."""
    return entry / f"{_LIBRARY_NAME}.so"


def _entry_for_another_compiler(root: Path, config: dict[str, Any]) -> Path | None:
    """With no compiler to run here, a complete entry that matches in everything but the compiler (built where
    there was one, e.g. before PATH changed) is the right build; None if there is none."""
    wanted = {k: v for k, v in config.items() if k != "compiler"}
    for complete in sorted(root.glob(f"*/{_COMPLETE}")):
        with contextlib.suppress(OSError, ValueError):
            recorded = json.loads(complete.read_text())
            if {k: v for k, v in recorded.items() if k in wanted} == wanted:
                return complete.parent
    return None


_CUDA_FAILED = "cuda-failed.txt"  # in the entry of a CUDA build that failed to compile: why (no retry per import)


class CudaHalfFailed(Exception):
    """The CUDA half did not compile where nothing forced it (PYKERNELS_CUDA unset): the CPU half serves instead."""


def load_cached(reason: str, compile_entry=compile_into) -> dict[str, Any]:
    """Load the cache's build for this torch and these sources, compiling it first if it is not there. Where the CUDA
    half fails to compile (and PYKERNELS_CUDA=1 did not ask for it), the CPU half alone, with the reason recorded in
    the CUDA entry so later imports don't try again."""
    try:
        plan = cuda_plan()
    except (RuntimeError, ValueError) as error:  # PYKERNELS_CUDA=1 asked for what cannot be built, or a typo
        raise ImportError(f"pykernels: {error}") from error
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImportError(
            f"pykernels: cannot use {root} as its kernel cache ({error}): set PYKERNELS_CACHE_DIR to a writable folder"
        ) from error
    if plan.build and not plan.forced:
        entry = root / cache_key(build_config(plan))
        with contextlib.suppress(OSError):
            if not (entry / _COMPLETE).exists():
                plan = plan.without_cuda((entry / _CUDA_FAILED).read_text())
    try:
        return _load_entry(root, build_config(plan), plan, reason, compile_entry)
    except CudaHalfFailed as failure:
        _say(str(failure))
        cpu_only = plan.without_cuda(str(failure))
        return _load_entry(root, build_config(cpu_only), cpu_only, reason, compile_entry)


def _load_entry(root: Path, config: dict[str, Any], plan: _build.CudaPlan, reason: str, compile_entry) -> dict:
    key = cache_key(config)
    entry = root / key
    if config["compiler"] is None and not (entry / _COMPLETE).exists():
        entry = _entry_for_another_compiler(root, config) or entry
    info = {
        "torch_version": config["torch_version"],
        "torch_cuda_version": config["torch_cuda_version"],
        "backends": ["cpu", "cuda"] if config["cuda"] else ["cpu"],
        "cuda_reason": plan.reason,
        "cuda_arch_list": config["cuda_arch_list"],
        "cpu_arch": _build.cpu_arch(),
        "debug": _build.debug(),
        "source": f"compiled on first use into {entry}",
    }
    if _load_verified(entry):
        LOADED.update(info)
        return LOADED
    waiting = f"waiting for another process compiling the kernels into {entry}"
    with _exclusive(root / f"{key}.lock", waiting) as held:
        if not _load_verified(entry):  # (another process may have compiled or rebuilt it while this one waited)
            if config["cuda"] and not plan.forced and (entry / _CUDA_FAILED).exists():
                raise CudaHalfFailed((entry / _CUDA_FAILED).read_text())  # (it failed while this one waited)
            reason = _discard_damaged(entry) or reason
            _compile_entry_locked(
                entry, config, reason, compile_entry, held, fall_back=not plan.forced, cuda_reason=plan.reason
            )
    LOADED.update(info)
    return LOADED


def _load_verified(entry: Path) -> bool:
    """Load the entry's library if the entry is complete and its library is the one recorded in its complete.json
    (checked and loaded through one open file: checked_library); False if it is incomplete or damaged."""
    recorded = _entry_record(entry)
    if recorded is None:
        return False
    with checked_library(_library(entry), recorded) as (damage, loadable):
        if damage is not None:
            return False
        try:
            _load_library(loadable, _library(entry))
        except OSError as error:
            raise ImportError(
                f"pykernels' cached build {_library(entry)} does not load ({error}): delete {entry} to rebuild it"
            ) from error
    return True


def _compile_entry_locked(
    entry: Path,
    config: dict[str, Any],
    reason: str,
    compile_entry,
    held: bool,
    fall_back: bool = True,
    cuda_reason: str = "",
) -> None:
    """Compile `entry` under its lock. A CUDA build that fails raises CudaHalfFailed where `fall_back` allows the CPU
    half instead (and records why in the entry), else ImportError."""
    entry.mkdir(parents=True, exist_ok=True)
    if held:
        # cpp_extension's own lock file, left behind by a compile that was killed (SIGKILL, a CI timeout): it would
        # make this compile wait forever. Holding pykernels' lock means no one else is compiling this entry.
        (entry / "lock").unlink(missing_ok=True)
    kind = "CPU + CUDA" if config["cuda"] else "CPU"
    _say(
        f"{reason}: compiling the {kind} kernels for torch {config['torch_version']} into {entry} "
        f"(once per torch version and source change; about {'5 minutes' if config['cuda'] else 'a minute'})"
    )
    if config["torch_cuda_version"] and not config["cuda"] and cuda_reason and cuda_reason != "PYKERNELS_CUDA=0":
        _say(f"no CUDA kernels: {cuda_reason}")  # a CUDA torch: say why its GPU will not run pykernels' kernels
    start = time.perf_counter()
    try:
        compile_entry(entry, config)
    except Exception as error:
        if config["cuda"] and fall_back and "Ninja is required" not in str(error):
            why = (
                f"the CUDA kernels failed to compile ({_build.first_compile_error(str(error))}): only the CPU kernels "
                f"are built (PYKERNELS_CUDA=0 skips the CUDA half quietly; PYKERNELS_CUDA=1 makes this an error and "
                f"shows the compiler's output; deleting {entry} tries again)"
            )
            (entry / _CUDA_FAILED).write_text(why)
            raise CudaHalfFailed(why) from error
        raise ImportError(
            f"pykernels could not compile its kernels for torch {config['torch_version']} ({reason}): "
            f"{error}. It needs a C++ compiler and ninja (pip install ninja); or build them at "
            "install: pip install --no-build-isolation ."
        ) from error
    _mark_complete(entry, config)
    (entry / _CUDA_FAILED).unlink(missing_ok=True)
    _say(f"compiled in {time.perf_counter() - start:.0f} s")


def _mark_complete(entry: Path, config: dict[str, Any]) -> None:
    """Write the entry's complete.json: its build config and its library's size and sha256 (checked before every
    load). Written last and atomically: a complete.json that exists is whole; the library it vouches for is checked."""
    partial = entry / f"{_COMPLETE}.{os.getpid()}.tmp"
    partial.write_text(json.dumps({**config, "library": _build.library_record(_library(entry))}, indent=1))
    os.replace(partial, entry / _COMPLETE)


def _load_library(loadable: str, path: Path) -> None:
    """torch.ops.load_library of the checked open file (torch's would resolve /proc/self/fd/N back to the file's
    name, and load whatever is there by then). The dynamic loader knows libraries by the name they were loaded by:
    if another library was once loaded by this same /proc/self/fd/N name, it would hand that one back, so where this
    file is not mapped afterwards it is loaded by its path (checked a moment ago)."""
    file = os.stat(loadable)
    ctypes.CDLL(loadable)  # (its TORCH_LIBRARY blocks register the operators)
    if loadable != str(path) and not _is_mapped(file, path):
        ctypes.CDLL(str(path))
    torch.ops.loaded_libraries.add(str(path))


def _is_mapped(file: os.stat_result, path: Path) -> bool:
    """Whether this file is mapped into this process: a mapping of its device and inode, or of its path (overlay
    file systems show other numbers there; " (deleted)": it was replaced since). True where /proc is unreadable."""
    device, names = f"{os.major(file.st_dev):02x}:{os.minor(file.st_dev):02x}", {str(path), f"{path} (deleted)"}
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.rstrip("\n").split(maxsplit=5)
                if len(fields) == 6 and ((fields[3], fields[4]) == (device, str(file.st_ino)) or fields[5] in names):
                    return True
    except OSError:
        return True
    return False


def _entry_record(entry: Path) -> object | None:
    """The library's record in the entry's complete.json (anything but a dict with a size and a sha256 is damage);
    None if there is no complete.json (an entry not yet whole). An unreadable one is an ImportError naming it."""
    try:
        recorded = json.loads((entry / _COMPLETE).read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # (cut short or garbled: damage)
        return {}
    except OSError as error:
        raise _unreadable(entry / _COMPLETE, error) from error
    return recorded.get("library") if isinstance(recorded, dict) else {}


def _entry_damage(entry: Path) -> str | None:
    """Why a complete entry must not be loaded (its library is not the one recorded in complete.json), or None."""
    recorded = _entry_record(entry)
    return None if recorded is None else library_damage(_library(entry), recorded)


def _discard_damaged(entry: Path) -> str | None:
    """A complete entry that failed its check is deleted whole, to be rebuilt from scratch (ninja goes by dates: it
    would keep a cut-short library or object file as up to date); returns why, or None if it was not complete.
    Called holding the entry's lock."""
    if not (entry / _COMPLETE).exists():
        return None
    damage = _entry_damage(entry) or "it failed its check"
    _say(f"the cached build in {entry} is not the one that was built ({damage}): deleting it to rebuild it")
    try:
        if entry.is_symlink():  # (a cache folder linked elsewhere: the link goes, what it points to is left alone)
            entry.unlink()
        else:
            shutil.rmtree(entry)
    except OSError as error:
        raise ImportError(
            f"pykernels: its cached build is damaged ({damage}) and cannot be deleted ({error}): delete {entry} "
            "(it is rebuilt on the next import), or set PYKERNELS_CACHE_DIR to a writable folder"
        ) from error
    return f"its cached build was damaged ({damage})"
