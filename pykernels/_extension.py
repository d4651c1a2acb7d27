"""Loading the compiled extension, with an error that names the fix when it was built for another torch."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REBUILD_COMMAND = "pip install --no-build-isolation --force-reinstall --no-deps ."
_BUILD_INFO_PATH = Path(__file__).with_name("_build_info.json")


def recorded_build_info() -> dict[str, Any] | None:
    """What setup.py recorded at build time (torch version, backends, archs), or None if not built."""
    try:
        return json.loads(_BUILD_INFO_PATH.read_text())
    except (OSError, ValueError):
        return None


def _mismatch_message(built_with: str | None, reason: str) -> str:
    built = f"torch {built_with}" if built_with else "an unknown torch"
    return (
        f"pykernels' compiled extension {reason}: it was built against {built}, and torch "
        f"{torch.__version__} is installed. Rebuild it against the installed torch, from the pykernels "
        f"source folder, in this environment: {REBUILD_COMMAND}"
    )


def check_build_matches(info: dict[str, Any] | None) -> None:
    """Raise ImportError if the extension was built against another torch than the one imported."""
    if info is None:
        raise ImportError(
            "pykernels' compiled extension is missing (pykernels/_build_info.json not found): build it with "
            f"{REBUILD_COMMAND} (torch and ninja must be installed first)"
        )
    if info.get("torch_version") != torch.__version__:
        raise ImportError(_mismatch_message(info.get("torch_version"), "does not match the installed torch"))


def _import_compiled_module() -> None:
    importlib.import_module("pykernels._C")  # runs the TORCH_LIBRARY registrations


def load(import_extension: Callable[[], None] = _import_compiled_module) -> dict[str, Any]:
    """Import pykernels._C (registering torch.ops.pykernels) after checking it matches this torch."""
    info = recorded_build_info()
    check_build_matches(info)
    try:
        import_extension()
    except ImportError as error:
        symbol = " (undefined symbol: an ABI mismatch)" if "undefined symbol" in str(error) else ""
        raise ImportError(_mismatch_message(info.get("torch_version"), f"failed to load{symbol}: {error}")) from error
    return info
