"""Where numba caches pykernels' compiled kernels, decided before any kernel is defined.

numba's ``cache=True`` writes next to the source (``__pycache__``) or, if that is read-only, under the user's cache
folder (from ``HOME``); with neither (a read-only install and no ``HOME``: containers, system site-packages) it
raises "cannot cache function ...: no locator available" and the import fails. pykernels keeps working instead:
``NUMBA_CACHE_DIR`` wins when set; otherwise, if neither of numba's places is writable, the cache goes to a folder
in the system temp dir (private to the user, checked: numba loads the code it finds there), with one warning.

A damaged cache file (an index or data file cut short by a full disk, an interrupted copy or a crash before the
data reached the disk) makes numba raise ``UnpicklingError: pickle data was truncated`` (or ``EOFError``) from every
call of the kernel, naming no file, or (damaged inside, still unpickling) fail in LLVM or crash. pykernels' kernels
are compiled with :func:`njit`, numba's own with a cache whose data files carry a sha256 and that treats a file it
cannot unpickle, verify, open or rebuild as a miss instead: it warns naming the file, deletes a damaged one, and the
kernel recompiles (and is cached again).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import warnings
from pathlib import Path

import numba
from numba.core.caching import IndexDataCacheFile

from .._folders import private_temp_folder, writable

_PACKAGE = Path(__file__).resolve().parent


def _user_cachewritable() -> bool:
    home = os.environ.get("XDG_CACHE_HOME") or (os.environ.get("HOME") and str(Path(os.environ["HOME"]) / ".cache"))
    return bool(home) and writable(Path(home) / "numba")


def ensure_cache_dir() -> None:
    """Point numba at a writable cache folder if the default ones are not."""
    if numba.config.CACHE_DIR or writable(_PACKAGE / "__pycache__") or _user_cachewritable():
        return
    fallback = private_temp_folder("pykernels-numba-cache", "NUMBA_CACHE_DIR")
    numba.config.CACHE_DIR = str(fallback)
    warnings.warn(
        f"pykernels: numba cannot cache next to the package nor under HOME; caching in {fallback} "
        "(set NUMBA_CACHE_DIR to choose)",
        RuntimeWarning,
        stacklevel=2,
    )


def cache_dir() -> str:
    """The folder numba caches pykernels' kernels in."""
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    return str(_PACKAGE / "__pycache__") if writable(_PACKAGE / "__pycache__") else "numba's user cache folder"


_DIGESTED = b"pykernels-sha256\0"  # data files written here: this, the payload's sha256, then numba's pickle


class _RecoveringCacheFile(IndexDataCacheFile):
    """numba's index and data files of one function's cache, where a damaged file is a miss (the kernel recompiles and
    is saved again) with a warning naming it, not an error from every call. Data files carry a sha256 of their
    payload: a file that still unpickles but is damaged inside (a page of zeros after a crash) would otherwise reach
    LLVM, which fails on it or crashes the process. A file that cannot be opened (a folder in its place, no
    permission) is a miss too, and one that cannot be written leaves the kernel uncached, both with a warning."""

    def _load_index(self) -> dict:
        try:
            return super()._load_index()
        except OSError as error:  # (a missing index is a miss in numba already)
            _unusable(self._index_path, error)
            return {}
        except Exception as error:  # truncated: UnpicklingError or EOFError; garbled: almost any error of pickle
            _drop(self._index_path, error)
            return {}

    def _load_data(self, name: str) -> object:
        path = self._data_path(name)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise  # numba's load() takes a missing data file for a miss
        except OSError as error:
            _unusable(path, error)
            return None
        if not raw.startswith(_DIGESTED):  # written by plain numba (before pykernels digested them): a miss
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        digest, payload = raw[len(_DIGESTED) : len(_DIGESTED) + 32], raw[len(_DIGESTED) + 32 :]
        try:
            if hashlib.sha256(payload).digest() != digest:
                raise ValueError("its sha256 does not match the one written with it")
            return pickle.loads(payload)
        except Exception as error:
            _drop(path, error)
            return None  # a miss: numba compiles, then overwrites this data file

    def _save_data(self, name: str, data: object) -> None:
        payload = self._dump(data)
        with self._open_for_write(self._data_path(name)) as f:
            f.write(_DIGESTED + hashlib.sha256(payload).digest() + payload)

    def save(self, key, data) -> None:
        try:
            super().save(key, data)
        except OSError as error:
            _unusable(self._cache_path, error)


def _unusable(path: str, error: OSError) -> None:
    warnings.warn(
        f"pykernels: numba's cache file {path} cannot be used ({type(error).__name__}: {error}): the kernel runs "
        "uncached; fix or delete it, or set NUMBA_CACHE_DIR to another folder",
        RuntimeWarning,
        stacklevel=3,
    )


def _drop(path: str, error: Exception) -> None:
    """Delete a damaged cache file (the next save writes a whole one), with a warning naming it."""
    deleted = False
    with contextlib.suppress(FileNotFoundError):  # (another process may have dropped it first)
        try:
            os.unlink(path)
            deleted = True
        except OSError as unlink_error:
            warnings.warn(
                f"pykernels: numba's cache file {path} is damaged and cannot be deleted ({unlink_error}): delete it "
                "or set NUMBA_CACHE_DIR to another folder",
                RuntimeWarning,
                stacklevel=2,
            )
            return
    warnings.warn(
        f"pykernels: numba's cache file {path} is damaged ({type(error).__name__}: {error}; a full disk or an "
        f"interrupted copy cuts files short): {'deleted it, ' if deleted else ''}recompiling the kernel",
        RuntimeWarning,
        stacklevel=2,
    )


def njit(*args, **options):
    """``numba.njit``, whose on-disk cache (``cache=True``) recovers from a damaged file (:class:`_RecoveringCacheFile`)
    instead of failing every call. Used like numba.njit: ``@njit(**options)`` or ``njit(**options)(function)``."""
    if args:
        return _recovering(numba.njit(*args, **options))
    return lambda function: _recovering(numba.njit(**options)(function))


class _RecoveringLoad:
    """Mixed into numba's function cache: cached code that unpickles but cannot be rebuilt (a valid pickle of the
    wrong thing) is a miss with a warning, not an error from every call."""

    def _load_overload(self, sig, target_context):
        try:
            return super()._load_overload(sig, target_context)
        except Exception as error:
            warnings.warn(
                f"pykernels: numba's cached code for {getattr(self, '_name', 'a kernel')} in "
                f"{getattr(self, '_cache_path', 'its cache folder')} cannot be loaded ({type(error).__name__}: "
                f"{error}): recompiling it (the new code replaces it)",
                RuntimeWarning,
                stacklevel=2,
            )
            return None


@functools.cache
def _recovering_class(cache_class: type) -> type:
    return type(f"Recovering{cache_class.__name__}", (_RecoveringLoad, cache_class), {})


def _recovering(dispatcher):
    cache = getattr(dispatcher, "_cache", None)
    if type(getattr(cache, "_cache_file", None)) is IndexDataCacheFile:  # (cache=True; another numba: left as it is)
        cache._cache_file.__class__ = _RecoveringCacheFile
        cache.__class__ = _recovering_class(type(cache))
    return dispatcher
