"""Per-model INT8 sensitivity search: which blocks to keep in float, found by measurement.

When the guard's fixed levels still miss the mAP budget, the model is split into units (each
top-level block of `model.model`, and each detection scale of the head) and ranked by how much
keeping that one unit in float repairs the INT8 output, measured against the FP32 model on a few
calibration images (train split: the val split stays for the budget check). The worst units are
then floated one at a time, in ranked order, and each candidate's mAP50-95 is measured on the val
split by running the exported file; a unit stays float only if that raised the mAP, until the drop
fits the budget or `max_units` are floated.

Ranking compares decoded detections, not raw tensors, so it reads both head layouts (anchors x
(4 + nc), and the end-to-end top-k of YOLOv10/YOLO26) and weighs what a user sees: a unit that
moves confident boxes matters, one that perturbs background scores does not. Ties (e.g. no
detections at all) are broken by the relative L2 error of the raw output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from edgeprune.formats.base import Unit

AGREEMENT_CONF = 0.1  # detections compared above this score: what a deployed threshold would keep and more
RANK_IMAGES = 16  # calibration images used to rank units (~0.1 s each through LiteRT/ONNX Runtime)


def float_units(model: nn.Module) -> list[Unit]:
    """Blocks that hold convolutions (Upsample/Concat have nothing to quantize), then the head's scales."""
    layers = model.model
    head = len(layers) - 1
    units = [Unit(i) for i, block in enumerate(layers[:head])
             if any(isinstance(m, nn.Conv2d) for m in block.modules())]
    return units + [Unit(head, k) for k in range(int(getattr(layers[head], "nl", 0)))]


def _covered(dets: np.ndarray, others: np.ndarray) -> tuple[float, float]:
    """(score-weighted sum of how well `others` reproduce each of `dets`, sum of their scores).

    A detection is reproduced by its best same-class box: IoU x the ratio of the two scores."""
    if len(dets) == 0 or len(others) == 0:
        return 0.0, float(dets[:, 4].sum()) if len(dets) else 0.0
    from edgeprune.evaluation.detection import same_class_iou

    iou = same_class_iou(dets, others)
    best = iou.argmax(1)
    s, t = dets[:, 4], others[best, 4]
    quality = iou[np.arange(len(dets)), best] * np.minimum(s, t) / np.maximum(np.maximum(s, t), 1e-9)
    return float((s * quality).sum()), float(s.sum())


def detection_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """0 when the candidate's detections equal the reference's, 1 when none match, counting both the
    reference's detections it loses and the spurious ones it adds (weighted by score)."""
    from edgeprune.evaluation.detection import decode

    errors = []
    for ref, cand in zip(decode(reference, conf=AGREEMENT_CONF), decode(candidate, conf=AGREEMENT_CONF)):
        (a, wa), (b, wb) = _covered(ref, cand), _covered(cand, ref)
        errors.append(1.0 - (a + b) / (wa + wb) if wa + wb > 0 else 0.0)
    return float(np.mean(errors))


def raw_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.linalg.norm(candidate - reference) / max(np.linalg.norm(reference), 1e-12))


@dataclass
class Candidate:
    units: tuple[Unit, ...]
    path: Path


def rank_units(build: Callable[[tuple[Unit, ...], str], Path], run: Callable[[Path, np.ndarray], np.ndarray],
               reference: np.ndarray, images: np.ndarray, units: Sequence[Unit], base: Path) -> list[dict]:
    """Error of the INT8 output with each unit alone in float (on top of the base level), best repair first.

    `base` is the base level's file; only units that repair something (error below its) are returned."""
    def error(path: Path) -> tuple[float, float]:
        out = run(path, images)
        return detection_error(reference, out), raw_error(reference, out)

    base = error(base)
    scores = []
    for unit in units:
        det, raw = error(build((unit,), f"rank-{unit.name}"))
        scores.append({"unit": unit, "detection_error": round(det, 5), "raw_error": round(raw, 5)})
        print(f"  INT8 sensitivity: {unit.name:16s} in float -> detection error {det:.4f} (base level: {base[0]:.4f}), "
              f"raw {raw:.4f}")
    scores.sort(key=lambda s: (s["detection_error"], s["raw_error"]))
    return [s for s in scores if (s["detection_error"], s["raw_error"]) < base]


def greedy(ranked: Sequence[Unit], max_units: int, build: Callable[[tuple[Unit, ...], str], Path],
           measure: Callable[[Path], dict], fits: Callable[[float], bool], baseline_map: float
           ) -> list[tuple[Candidate, dict]]:
    """Try floating the ranked units one more at a time, keeping a unit only if the measured mAP50-95
    rises above the best so far; stop when the budget holds, `max_units` are kept or 2 x `max_units`
    candidates were measured (the proxy ranking is a guide, not a guarantee)."""
    tried, kept, best = [], (), baseline_map
    for unit in ranked[: 2 * max_units]:
        units = (*kept, unit)
        path = build(units, f"search-{len(tried) + 1}")
        metrics = measure(path)
        tried.append((Candidate(units, path), metrics))
        better = metrics["map50_95"] > best
        print(f"  INT8 guard: search +{', '.join(u.name for u in units)}: mAP50-95 {metrics['map50_95']:.4f} "
              f"({'kept' if better else 'no gain, dropped'})")
        if better:
            kept, best = units, metrics["map50_95"]
        if fits(metrics["map50_95"]) or len(kept) == max_units:
            break
    return tried
