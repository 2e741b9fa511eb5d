"""Helpers the benchmark scripts share (imported as ``common``: each script runs with
``benchmarks/`` first on ``sys.path``)."""

from __future__ import annotations

import resource
import time

import numpy as np


def best_time(fn, repeat: int = 1) -> tuple[float, object]:
    """(best wall time [s] over ``repeat`` calls of ``fn()``, the last call's result)."""
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far [MiB] (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
