"""Timing a candidate on this machine, for devices that are this machine (`device.measure_here`) and benchmarks.

The candidate is exported exactly as the target deploys it (format, precision, INT8 calibrated on the
dataset) and run by the same runner the evaluator uses; the number is the budget's percentile.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgeprune import formats
from edgeprune.budget.plan import Timer
from edgeprune.data.dataset import Dataset
from edgeprune.evaluation.latency import measure
from edgeprune.manifest import scratch_dir
from edgeprune.quantize.calibration import calibration_set
from edgeprune.targets import Target

CALIBRATION_IMAGES = 32  # ranges only need to be plausible for timing: INT8 kernels run the same either way
TIMED_RUNS = 60


def here_timer(target: Target, dataset: Dataset, work_dir: Path) -> Timer:
    """(module, imgsz, precision) -> milliseconds at the target's budget percentile, exported and timed here."""
    exporter = formats.get(target.device.format)
    key = f"p{target.budget.percentile}_ms"

    def time_here(model: nn.Module, imgsz: int, precision: str) -> float:
        calibration = (calibration_set(dataset, imgsz, min(CALIBRATION_IMAGES, target.recipe.quantize.calibration_images))
                       if precision == "int8" else None)
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        with scratch_dir("timing", dir=work_dir) as tmp:
            path = exporter.export(model, Path(tmp) / f"model{exporter.caps.suffix}", imgsz, precision, calibration)
            runner = formats.load_runner(path, threads=target.validation.threads, imgsz=imgsz)
            timed = measure(runner.run, imgsz, warmup=target.validation.warmup,
                            runs=min(target.validation.runs, TIMED_RUNS))
        return timed.get(key, timed["p99_ms"])

    return time_here
