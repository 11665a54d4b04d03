"""INT8 accuracy guard: keep the parts of the graph that hurt INT8 most in float until the drop fits.

Levels, tried in order and stopped at the first within the target's budget (max_map_drop of
mAP50-95 against the same model in PyTorch FP32): everything INT8; box/score decoding in float
(DFL softmax and integral, dist2bbox, sigmoid: tiny compute, large quantization error); plus the
head's final box/class convolutions; for ONNX/TensorRT, that again with percentile instead of
min/max activation ranges. A level that cannot be built (e.g. percentile histograms of a constant
tensor) is recorded as failed and skipped. If none fits, the most accurate candidate is kept and the
report says the budget was missed. Every candidate is measured by running the exported file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edgeprune.errors import EdgepruneError


def export_with_guard(exporter, model: torch.nn.Module, artefact: Path, imgsz: int, precision: str,
                      calibration: np.ndarray | None, reference_map: float, max_drop: float,
                      measure: Callable[[Path], dict]) -> dict:
    levels = exporter.caps.guard_levels if precision == "int8" else ("none",)
    tried, best = [], None
    artefact.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".guard-", dir=artefact.parent) as tmp:
        for level in levels:
            folder = Path(tmp) / level
            folder.mkdir()
            kwargs = {"float_scope": level} if len(exporter.caps.guard_levels) > 1 else {}
            try:
                exporter.export(model, folder / artefact.name, imgsz, precision, calibration, **kwargs)
            except EdgepruneError as error:
                if level == levels[0]:
                    raise
                tried.append({"float_scope": level, "map50_95": None, "drop": None, "failed": error.problem})
                print(f"  INT8 guard: float_scope={level}: skipped ({error.problem})")
                continue
            metrics = measure(folder / artefact.name)
            drop = round(reference_map - metrics["map50_95"], 4)
            tried.append({"float_scope": level, "map50_95": metrics["map50_95"], "drop": drop})
            print(f"  INT8 guard: float_scope={level}: mAP50-95 {metrics['map50_95']:.4f} (drop {drop:+.4f})")
            if best is None or metrics["map50_95"] > best[1]["map50_95"]:
                best = (level, metrics, folder)
            if drop <= max_drop:
                break
        level, metrics, folder = best
        move_into(folder, artefact.parent)
    metrics["accuracy_guard"] = {"reference_map50_95": reference_map, "max_drop": max_drop, "chosen": level,
                                 "within_budget": reference_map - metrics["map50_95"] <= max_drop, "tried": tried}
    return metrics


def move_into(folder: Path, destination: Path) -> None:
    """Move a staged candidate's files next to the final artefact (same filesystem: each rename is atomic)."""
    for item in folder.iterdir():
        os.replace(item, destination / item.name)
