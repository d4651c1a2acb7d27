"""Cache folders shared by the compiled extension's cache and numba's: writable checks, and the private fallback in
the system temp dir."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def writable(folder: Path) -> bool:
    """Whether ``folder`` exists (created if need be) and this process can create files in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def private_temp_folder(prefix: str, variable: str) -> Path:
    """$TMPDIR/<prefix>-<uid>, created mode 700; refused (ImportError naming ``variable``, the setting that chooses
    another folder) unless it is a real folder of this user that no one else can write: a shared temp dir lets anyone
    create that name first and plant code this process would load."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = Path(tempfile.gettempdir()) / f"{prefix}-{uid if uid is not None else 'user'}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        status = folder.lstat()
    except OSError as error:
        raise ImportError(f"pykernels: cannot create its cache folder {folder} ({error}): set {variable}") from error
    foreign = uid is not None and status.st_uid != uid
    if not stat.S_ISDIR(status.st_mode) or foreign or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ImportError(
            f"pykernels: the cache folder {folder} is not a private folder of this user (a link, another owner, or "
            f"writable by others), so it is not used: set {variable} to a folder of yours"
        )
    return folder
