"""Timing a candidate on this machine, for devices that are this machine (`device.measure_here`) and benchmarks.

The candidate is exported as the target deploys it (format, precision, INT8 calibrated on the dataset, with as
much of the graph in float as the INT8 guard may keep: the guard runs after the plan) and run by the same runner
the evaluator uses; the number is the budget's percentile. A shared
machine drifts by tens of per cent within minutes, so a candidate is timed in interleaved turns beside a
reference (the unpruned model at the largest size, exported once) and reported as that ratio times the
reference's first timing: every candidate of a plan is then measured against the same yardstick.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgeprune import formats
from edgeprune.budget.plan import Timer
from edgeprune.data.dataset import Dataset
from edgeprune.evaluation.latency import measure, measure_interleaved
from edgeprune.manifest import scratch_dir
from edgeprune.quantize.calibration import calibration_set
from edgeprune.targets import Target

CALIBRATION_IMAGES = 32  # ranges only need to be plausible for timing: INT8 kernels run the same either way
TIMED_RUNS = 60
PAIRED_ROUNDS = 12  # interleaved turns of candidate and reference, 5 timed runs each: a p90 of 60 runs


def here_timer(target: Target, dataset: Dataset, work_dir: Path,
               reference: tuple[nn.Module, int] | None = None) -> Timer:
    """(module, imgsz, precision) -> milliseconds at the target's budget percentile, exported and timed here;
    with `reference` (model, imgsz), timed beside it and scaled to its first timing."""
    exporter = formats.get(target.device.format)
    key = f"p{target.budget.percentile}_ms"
    work_dir = Path(work_dir)
    references: dict[str, tuple] = {}  # precision -> (runner, imgsz, its first timing in ms)

    def export(model: nn.Module, imgsz: int, precision: str, folder: Path):
        calibration = (calibration_set(dataset, imgsz, min(CALIBRATION_IMAGES, target.recipe.quantize.calibration_images))
                       if precision == "int8" else None)
        path = exporter.export(model, folder / f"model{exporter.caps.suffix}", imgsz, precision, calibration,
                               float_scope=exporter.timing_scope(precision))
        return formats.load_runner(path, threads=target.validation.threads, imgsz=imgsz)

    def alone(runner, imgsz: int) -> float:
        timed = measure(runner.run, imgsz, warmup=target.validation.warmup, runs=min(target.validation.runs, TIMED_RUNS))
        return timed.get(key, timed["p99_ms"])

    def reference_for(precision: str) -> tuple:
        if precision not in references:
            model, imgsz = reference
            folder = work_dir / f"reference-{precision}"
            folder.mkdir(parents=True, exist_ok=True)
            runner = export(model, imgsz, precision, folder)
            references[precision] = (runner, imgsz, alone(runner, imgsz))
        return references[precision]

    def time_here(model: nn.Module, imgsz: int, precision: str) -> float:
        work_dir.mkdir(parents=True, exist_ok=True)
        with scratch_dir("timing", dir=work_dir) as tmp:
            runner = export(model, imgsz, precision, Path(tmp))
            if reference is None:
                return alone(runner, imgsz)
            ref_runner, ref_size, ref_ms = reference_for(precision)
            timed = measure_interleaved({"candidate": runner.run, "reference": ref_runner.run},
                                        {"candidate": imgsz, "reference": ref_size}, rounds=PAIRED_ROUNDS)
        pick = lambda t: t.get(key, t["p99_ms"])  # noqa: E731
        return ref_ms * pick(timed["candidate"]) / pick(timed["reference"])

    return time_here
