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


def measure_interleaved(runs_by_name: dict[str, Callable[[np.ndarray], object]], imgsz: int | dict[str, int],
                        warmup: int = 2, per_turn: int = 5, rounds: int = 8, seed: int = 0,
                        settle_ms: float = 50.0) -> dict[str, dict[str, float]]:
    """Time several models in turns — each turn re-warms one model (at least `warmup` untimed runs and
    `settle_ms` of them: ONNX Runtime's idle worker threads keep spinning for a while after the previous
    session's last run and would steal the cores of the next one) then times `per_turn` runs — round after
    round, so a slow spell of the machine hits all of them alike while each is still timed in a steady state.
    `imgsz` may differ per model (a dict by name), so models at different input sizes compare side by side."""
    sizes = imgsz if isinstance(imgsz, dict) else {name: imgsz for name in runs_by_name}
    inputs = {s: np.random.default_rng(seed).random((1, 3, s, s), dtype=np.float32) for s in set(sizes.values())}
    times = {name: [] for name in runs_by_name}
    for _ in range(rounds):
        for name, run in runs_by_name.items():
            x = inputs[sizes[name]]
            settle_start, warmed = time.perf_counter(), 0
            while warmed < warmup or (time.perf_counter() - settle_start) * 1000 < settle_ms:
                run(x)
                warmed += 1
            for _ in range(per_turn):
                start = time.perf_counter()
                run(x)
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: summarize(t) for name, t in times.items()}


def summarize(times_ms: list[float]) -> dict[str, float]:
    t = np.asarray(times_ms)
    return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p90_ms": round(float(np.percentile(t, 90)), 3),
            "p99_ms": round(float(np.percentile(t, 99)), 3), "mean_ms": round(float(t.mean()), 3),
            "runs": len(times_ms)}
