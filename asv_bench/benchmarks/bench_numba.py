"""numba specifics: compile cost (cold cache, warm cache, in fresh processes), and parallel vs serial kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from .common import Benchmark, SkipNotImplemented, dot_data, poly_data

_WARMUP = (
    "import json, time; t = time.perf_counter(); import pykernels.numba as m; s = m.warmup(parallel=False); "
    "print(json.dumps({'total': time.perf_counter() - t, 'kernels': s}))"
)


def _warmup_seconds(cache_dir: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", _WARMUP],
        env={**os.environ, "NUMBA_CACHE_DIR": cache_dir},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(result.stdout)["total"]


class Compile(Benchmark):
    """Seconds to import the numba backend and get every serial kernel ready (float32 + float64)."""

    timeout = 1200
    unit = "seconds"

    def setup(self):
        try:
            import numba  # noqa: F401
        except ImportError as error:
            raise SkipNotImplemented("numba not installed") from error

    def track_cold_cache(self):
        with tempfile.TemporaryDirectory() as cache:
            return _warmup_seconds(cache)

    def track_warm_cache(self):
        with tempfile.TemporaryDirectory() as cache:
            _warmup_seconds(cache)
            return _warmup_seconds(cache)


class ParallelVsSerial(Benchmark):
    """Each numba reduction, serial and parallel at each size: the size threshold should pick the faster."""

    params = [["poly_mse", "dot"], ["serial", "parallel"], [1_000, 100_000, 10_000_000]]
    param_names = ["op", "variant", "n"]

    def setup(self, op, variant, n):
        try:
            from pykernels.numba import _config, cpu
        except ImportError as error:
            raise SkipNotImplemented("numba not installed") from error
        kernel = {
            "poly_mse": (cpu._poly_mse_serial, cpu._poly_mse_parallel),
            "dot": (cpu._dot_serial, cpu._dot_parallel),
        }[op][variant == "parallel"]
        if op == "dot":
            a, b = dot_data(n, "float32")
            out = np.empty(1, np.float32)
            self.call = lambda: kernel(a, b, _config.REDUCE_CHUNK, out)
        else:
            x, y, c = poly_data(n, "float32")
            loss, grad = np.empty(1, np.float32), np.empty(c.size, np.float32)
            self.call = lambda: kernel(x, y, c, _config.REDUCE_CHUNK, loss, grad)
        self.call()

    def time_call(self, op, variant, n):
        self.call()
