"""Where numba caches pykernels' compiled kernels, decided before any kernel is defined.

numba's ``cache=True`` writes next to the source (``__pycache__``) or, if that is read-only, under the user's cache
folder (from ``HOME``); with neither (a read-only install and no ``HOME``: containers, system site-packages) it
raises "cannot cache function ...: no locator available" and the import fails. pykernels keeps working instead:
``NUMBA_CACHE_DIR`` wins when set; otherwise, if neither of numba's places is writable, the cache goes to a folder
in the system temp dir (private to the user, checked: numba loads the code it finds there), with one warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numba

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
