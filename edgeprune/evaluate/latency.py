"""Host latency: warm-up, then N timed single-image runs, reported as percentiles in milliseconds.

Host numbers compare stages with each other on one machine; they are not device latencies.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def measure(run: Callable[[np.ndarray], object], imgsz: int, warmup: int = 5, runs: int = 30,
            seed: int = 0) -> dict[str, float]:
    x = np.random.default_rng(seed).random((1, 3, imgsz, imgsz), dtype=np.float32)
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1000)
    return summarize(times)


def summarize(times_ms: list[float]) -> dict[str, float]:
    t = np.asarray(times_ms)
    return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p90_ms": round(float(np.percentile(t, 90)), 3),
            "p99_ms": round(float(np.percentile(t, 99)), 3), "mean_ms": round(float(t.mean()), 3),
            "runs": len(times_ms)}
