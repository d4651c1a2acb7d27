"""Tunables of the numba kernels (module constants, so tests can patch them; ``_reset`` restores them)."""

from __future__ import annotations

import multiprocessing
import os

# Elements per reduction chunk: the same fixed chunking as the C++ kernels, so serial and parallel runs (and any
# thread count) combine the same partial sums in the same order and give bit-identical results.
REDUCE_CHUNK = 1 << 15
# Below this many elements the serial kernels run: starting threads costs more than the work (numba#3213).
PARALLEL_THRESHOLD = 1 << 17
# CUDA launch shape: threads per block (a power of two: the block reduction halves it) and a cap on blocks for
# the grid-stride loops (each block leaves one partial sum per output).
CUDA_THREADS_PER_BLOCK = 256
CUDA_MAX_BLOCKS = 1024
# Per-thread accumulators on the GPU live in a fixed-size local array.
CUDA_MAX_DEGREE = 15

_DEFAULTS = {name: value for name, value in globals().items() if name.isupper()}


def _started_by_fork() -> bool:
    """Whether this process is a multiprocessing child started by fork (a DataLoader worker, a Pool child), which
    inherits its parent's threading runtimes even where pykernels is first imported after the fork."""
    if multiprocessing.parent_process() is None:
        return False
    method = getattr(multiprocessing.current_process(), "_start_method", None)
    return (method or multiprocessing.get_start_method(allow_none=True)) == "fork"


# True in a forked process (forked after pykernels was imported, or a multiprocessing child started by fork): the
# threading runtimes the parallel kernels use (GNU OpenMP, numba's and torch's) are not fork-safe, so forked
# children run the serial kernels, whatever the parent ran before the fork.
forked = _started_by_fork()


def _mark_forked() -> None:
    global forked
    forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked)


def _reset() -> None:
    """Restore every tunable to its default."""
    globals().update(_DEFAULTS)
