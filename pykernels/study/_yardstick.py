"""The yardstick for the fused fit: the loop a numba user would hand-write for the degree-4 fit. Kept in its own
module so that numba's on-disk cache can key it by this file."""

from __future__ import annotations

import numpy as np

from ..numba._cache import njit  # numba's, with a cache that recovers from a damaged file


@njit(fastmath=True, cache=True)
def fit_degree4_fastmath(x, y, w, lr, trace):  # pragma: no cover - compiled
    """len(trace) steps of gradient descent on mean((p(x) - y)^2), degree 4 unrolled, scalar float32 sums; w
    (5,) updated in place, trace[s] = the loss at step s."""
    c0, c1, c2, c3, c4 = w[0], w[1], w[2], w[3], w[4]
    n = x.shape[0]
    scale = np.float32(2.0 / n)
    for step in range(trace.shape[0]):
        s = g0 = g1 = g2 = g3 = g4 = np.float32(0.0)
        for i in range(n):
            xi = x[i]
            r = (((c4 * xi + c3) * xi + c2) * xi + c1) * xi + c0 - y[i]
            s += r * r
            g0 += r
            t = r * xi
            g1 += t
            t *= xi
            g2 += t
            t *= xi
            g3 += t
            t *= xi
            g4 += t
        c0 -= lr * scale * g0
        c1 -= lr * scale * g1
        c2 -= lr * scale * g2
        c3 -= lr * scale * g3
        c4 -= lr * scale * g4
        trace[step] = s / n
    w[0], w[1], w[2], w[3], w[4] = c0, c1, c2, c3, c4
