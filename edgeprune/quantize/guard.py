"""INT8 accuracy guard: keep the parts of the graph that hurt INT8 most in float until the drop fits.

Levels, tried in order and stopped at the first within the target's budget (max_map_drop of
mAP50-95 against the same model in PyTorch FP32): everything INT8; for TFLite, box/score decoding in
float (DFL softmax and integral, dist2bbox, sigmoid, final concat: tiny compute, large quantization
error; QDQ ONNX quantizes only convolutions, so its decoding is always float); plus the head's final
box/class convolutions; for ONNX/TensorRT, that again with percentile instead of
min/max activation ranges. A level that cannot be built (e.g. percentile histograms of a constant
tensor) is recorded as failed and skipped. If every level misses, a per-model sensitivity search
(edgeprune.quantize.sensitivity) floats this model's worst blocks on top of the best level, one at
a time, until the budget holds or `search_units` blocks are floated. If nothing fits, the most
accurate candidate is kept and the report says the budget was missed. Every candidate is measured
by running the exported file; all candidates share one FP32 conversion and one calibration.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.formats.base import ExportCache, Format
from edgeprune.manifest import scratch_dir
from edgeprune.quantize import sensitivity


def export_with_guard(exporter: Format, model: torch.nn.Module, artefact: Path, imgsz: int, precision: str,
                      calibration: np.ndarray | None, reference_map: float, max_drop: float,
                      measure: Callable[[Path], dict], search_units: int = 0) -> dict:
    tunable = precision == "int8" and len(exporter.caps.guard_levels) > 1
    levels = exporter.caps.guard_levels if precision == "int8" else ("none",)
    fits = lambda value: reference_map - value <= max_drop  # noqa: E731
    tried, best = [], None
    artefact.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir("guard", dir=artefact.parent) as tmp:
        cache = ExportCache(Path(tmp) / "cache")

        def build(level: str, units: tuple = (), name: str | None = None) -> Path:
            folder = Path(tmp) / (name or level.replace("/", "-"))
            folder.mkdir()
            kwargs = {"float_scope": level, "float_units": units, "cache": cache} if tunable else {}
            return exporter.export(model, folder / artefact.name, imgsz, precision, calibration, **kwargs)

        def keep(level: str, path: Path, metrics: dict, units: tuple = ()) -> None:
            nonlocal best
            drop = round(reference_map - metrics["map50_95"], 4)
            tried.append({"float_scope": f"{level}+search" if units else level, "map50_95": metrics["map50_95"],
                          "drop": drop, **({"float_units": [u.name for u in units]} if units else {})})
            if best is None or metrics["map50_95"] > best[1]["map50_95"]:
                best = (level, metrics, path, units)

        for level in levels:
            try:
                path = build(level)
            except EdgepruneError as error:
                if level == levels[0]:
                    raise
                tried.append({"float_scope": level, "map50_95": None, "drop": None, "failed": error.problem})
                print(f"  INT8 guard: float_scope={level}: skipped ({error.problem})")
                continue
            metrics = measure(path)
            keep(level, path, metrics)
            print(f"  INT8 guard: float_scope={level}: mAP50-95 {metrics['map50_95']:.4f} "
                  f"(drop {tried[-1]['drop']:+.4f})")
            if fits(metrics["map50_95"]):
                break
        search = None
        if tunable and search_units > 0 and not fits(best[1]["map50_95"]):
            base, base_metrics, base_path, _ = best
            search = _search(exporter, model, imgsz, calibration, base, base_path, base_metrics["map50_95"],
                             search_units, measure, fits, lambda units, name: build(base, units, name))
            for candidate, metrics in search.pop("candidates"):
                keep(base, candidate.path, metrics, candidate.units)
        level, metrics, path, units = best
        move_into(path.parent, artefact.parent)
    chosen = "+".join([level, *(u.name for u in units)])
    metrics["accuracy_guard"] = {"reference_map50_95": reference_map, "max_drop": max_drop, "chosen": chosen,
                                 "float_units": [u.name for u in units],
                                 "within_budget": fits(metrics["map50_95"]), "tried": tried,
                                 **({"sensitivity": search} if search else {})}
    return metrics


def _search(exporter: Format, model, imgsz: int, calibration: np.ndarray, base: str, base_path: Path, base_map: float,
            max_units: int, measure, fits, build) -> dict:
    """Rank this model's units on calibration images, then float the worst ones until the budget holds."""
    from edgeprune.formats.graph import denormalize, deploy_graph

    images = calibration[: sensitivity.RANK_IMAGES].astype(np.float32)
    graph = deploy_graph(model, imgsz)
    with torch.inference_mode():
        reference = denormalize(graph(torch.from_numpy(images)).numpy(), imgsz, graph.end2end)

    def run(path: Path, x: np.ndarray) -> np.ndarray:
        return exporter.load_runner(path, threads=2, imgsz=imgsz).run(x)  # runners take a batch

    print(f"  INT8 guard: every level misses the budget; ranking blocks by INT8 sensitivity (base {base})")
    units = sensitivity.float_units(model)
    ranked = sensitivity.rank_units(build, run, reference, images, units, base_path)
    candidates = sensitivity.greedy([r["unit"] for r in ranked], max_units, build, measure, fits, base_map)
    return {"base": base, "images": len(images), "candidates": candidates,
            "ranking": [{**r, "unit": r["unit"].name} for r in ranked]}


def move_into(folder: Path, destination: Path) -> None:
    """Move a staged candidate's files next to the final artefact (same filesystem: each rename is atomic)."""
    for item in folder.iterdir():
        os.replace(item, destination / item.name)
