"""The versions pykernels supports, in one place: pyproject.toml's bounds, the import-time check and CI's support
matrix (.ci/matrix.py) all agree with these, and tests/test_support.py checks that they do.

Stdlib only: setup.py and .ci/matrix.py load this file on its own.
"""

from __future__ import annotations

import re

# torch releases whose C++ API the sources compile against (csrc/compat.h covers the differences). The lower end is
# a hard limit: older torch lacks APIs the kernels use. The upper end is the newest release CI has tested; a newer
# torch is admitted (no known break) with a warning, since the C++ autograd kernels use torch-internal headers.
OLDEST_TORCH = (2, 11)
NEWEST_TESTED_TORCH = (2, 15)
OLDEST_PYTHON = (3, 11)


def release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '2.11.0+cu130' or '2.13.0a0+git1234'."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    return int(match[1]), int(match[2])


def dotted(version: tuple[int, int]) -> str:
    return ".".join(map(str, version))


def torch_range() -> str:
    return f"{dotted(OLDEST_TORCH)} to {dotted(NEWEST_TESTED_TORCH)}"


def check_torch(version: str) -> str | None:
    """Raise ImportError for a torch older than the supported range; return a warning's text for one newer than the
    newest tested, else None."""
    try:
        found = release(version)
    except ValueError:
        return f"pykernels cannot read torch's version {version!r}; it is tested with torch {torch_range()}"
    if found < OLDEST_TORCH:
        raise ImportError(
            f"pykernels needs torch >= {dotted(OLDEST_TORCH)} (supported: torch {torch_range()}), but torch {version} "
            f"is installed: pip install 'torch>={dotted(OLDEST_TORCH)}'"
        )
    if found > NEWEST_TESTED_TORCH:
        return (
            f"pykernels is tested with torch {torch_range()}; torch {version} is newer. If its kernels fail to "
            "compile against it, please report it, and meanwhile install a tested torch."
        )
    return None
