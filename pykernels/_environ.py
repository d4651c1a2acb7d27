"""Environment variables set for a while: a build, a child process's start."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def scoped(variables: Mapping[str, str]) -> Iterator[None]:
    """Set ``variables`` in os.environ inside the block; restore (or remove) them after, however it exits."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
