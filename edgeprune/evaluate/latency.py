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


def measure_interleaved(runs_by_name: dict[str, Callable[[np.ndarray], object]], imgsz: int, warmup: int = 5,
                        rounds: int = 40, seed: int = 0) -> dict[str, dict[str, float]]:
    """Time several models in turns (A, B, C, A, B, C, ...) so a slow spell of the machine hits all of
    them alike: ratios between them are then far steadier than from back-to-back blocks of runs."""
    x = np.random.default_rng(seed).random((1, 3, imgsz, imgsz), dtype=np.float32)
    for run in runs_by_name.values():
        for _ in range(warmup):
            run(x)
    times = {name: [] for name in runs_by_name}
    for _ in range(rounds):
        for name, run in runs_by_name.items():
            start = time.perf_counter()
            run(x)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: summarize(t) for name, t in times.items()}


def summarize(times_ms: list[float]) -> dict[str, float]:
    t = np.asarray(times_ms)
    return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p90_ms": round(float(np.percentile(t, 90)), 3),
            "p99_ms": round(float(np.percentile(t, 99)), 3), "mean_ms": round(float(t.mean()), 3),
            "runs": len(times_ms)}
