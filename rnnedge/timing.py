"""Timing candidates fairly: interleaved calls, warm-up dropped, percentiles (numpy only).

Every candidate of one measurement is called once per iteration in an order shuffled anew, so
drift of the machine (other work, clock changes) lands on all of them alike; the garbage
collector is off while timing (as `timeit`). `bench` and `quantize` both time this way.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rnnedge.errors import RnnEdgeError


def whole(what: str, value, low: int) -> int:
    """`value` as an int >= `low`, or RnnEdgeError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise RnnEdgeError(f"{what} must be a whole number >= {low}, got {value!r}")
    return int(value)


def measure(candidates: Mapping[str, Callable[[], Any]], *, runs: int = 200, warmup: int = 20,
            seed: int = 0) -> dict[str, np.ndarray]:
    """Call every candidate `warmup` + `runs` times, interleaved; name -> the `runs` latencies in ms.

    Each iteration calls every candidate once in an order shuffled anew (seeded), so none
    always runs first or right after a slow one. Warm-up iterations are dropped.
    """
    whole("runs", runs, 1)
    whole("warmup", warmup, 0)
    names = list(candidates)
    calls = [candidates[n] for n in names]
    order = list(range(len(names)))
    rng = np.random.default_rng(seed)
    samples = np.empty((len(names), runs))
    clock = time.perf_counter
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for i in range(-warmup, runs):
            rng.shuffle(order)
            for k in order:
                call = calls[k]
                start = clock()
                call()
                elapsed = clock() - start
                if i >= 0:
                    samples[k, i] = elapsed
    finally:
        if enabled:
            gc.enable()
    return {n: samples[k] * 1e3 for k, n in enumerate(names)}


def percentiles(ms: np.ndarray) -> tuple[float, float, float]:
    """(p50, p90, p99) of latencies."""
    p50, p90, p99 = np.percentile(np.asarray(ms, np.float64), [50, 90, 99])
    return float(p50), float(p90), float(p99)
