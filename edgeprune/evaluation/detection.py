"""mAP of any runnable artefact on a dataset's val split, with one protocol for every stage.

PyTorch models, ONNX and TFLite files all go through the same letterbox, decoding, NMS and
COCO evaluation (pycocotools), so differences in the report come from the model, not the harness;
letterbox, decoding and NMS are the device module's, so the device computes what was evaluated.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from edgeprune.data.dataset import Dataset
from edgeprune.data.letterbox import letterbox, to_input
from edgeprune.device import edgeprune_detector as device

CONF_THRESHOLD = 0.001  # low threshold for mAP, as in COCO practice
IOU_THRESHOLD = 0.7
MAX_DET = 300

RunFn = Callable[[np.ndarray], np.ndarray]  # float32 NCHW batch -> raw head output


def decode(raw: np.ndarray, conf: float = CONF_THRESHOLD, iou: float = IOU_THRESHOLD,
           max_det: int = MAX_DET) -> list[np.ndarray]:
    """Raw head output -> per-image arrays of [x1, y1, x2, y2, score, class] in input pixels.

    Both head layouts, through the device module's `decode` (the code every bundle runs): (B, 4 + nc,
    anchors) xywh boxes with class-aware NMS, and the NMS-free end-to-end heads' (B, max_det, 6).
    """
    end2end = device.is_end2end(raw)
    results = []
    for pred in raw:
        boxes, scores, classes = device.decode(np.asarray(pred, np.float32), end2end, conf, iou, max_det)
        results.append(np.concatenate([boxes, scores[:, None], classes[:, None].astype(np.float32)], 1)
                       .astype(np.float32))
    return results


def same_class_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every detection in `a` with every one in `b` ([x1, y1, x2, y2, score, class] rows), 0 across classes."""
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda d: (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])  # noqa: E731
    iou = inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)
    iou[a[:, None, 5] != b[None, :, 5]] = 0
    return iou


def predict_dataset(run: RunFn, dataset: Dataset, imgsz: int, batch: int = 8, desc: str = "eval",
                    limit: int | None = None) -> tuple[list, list]:
    """Run over the val split; returns (ground truth, detections) per image in original pixels."""
    images = dataset.val_images[:limit] if limit else dataset.val_images
    truths, detections = [], []
    for start in tqdm(range(0, len(images), batch), desc=desc, unit="batch", leave=False):
        chunk = images[start : start + batch]
        opened = [Image.open(p) for p in chunk]
        boxed = [letterbox(im, imgsz) for im in opened]
        raw = run(to_input([b[0] for b in boxed]))
        for path, im, (_, box), det in zip(chunk, opened, boxed, decode(raw)):
            w, h = im.size
            det = det.copy()
            det[:, :4] = box.to_original(det[:, :4], w, h)
            detections.append(det)
            truths.append((w, h, dataset.labels(path)))
    return truths, detections


def coco_map(truths: list, detections: list, nc: int) -> dict[str, float]:
    """mAP50-95 and mAP50 with pycocotools' COCOeval (101-point interpolation, area ranges)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_id, ((w, h, labels), det) in enumerate(zip(truths, detections), start=1):
        images.append({"id": image_id, "width": w, "height": h})
        for c, x, y, bw, bh in labels:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": c + 1,
                                "bbox": [(x - bw / 2) * w, (y - bh / 2) * h, bw * w, bh * h],
                                "area": bw * w * bh * h, "iscrowd": 0})
        for x1, y1, x2, y2, score, cls in det:
            results.append({"image_id": image_id, "category_id": int(cls) + 1,
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(score)})
    if not annotations:
        return {"map50_95": 0.0, "map50": 0.0}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": i + 1, "name": str(i)} for i in range(nc)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not results:
            return {"map50_95": 0.0, "map50": 0.0}
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map50_95": round(float(evaluator.stats[0]), 4), "map50": round(float(evaluator.stats[1]), 4)}


def evaluate(run: RunFn, dataset: Dataset, imgsz: int, desc: str = "eval", batch: int = 8,
             limit: int | None = None) -> dict[str, float]:
    truths, detections = predict_dataset(run, dataset, imgsz, batch=batch, desc=desc, limit=limit)
    return coco_map(truths, detections, dataset.nc)


def torch_runner(model: torch.nn.Module) -> RunFn:
    model = model.float().eval()

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        out = model(torch.from_numpy(x))
        return (out[0] if isinstance(out, (list, tuple)) else out).numpy()

    return run


def evaluate_model(model: torch.nn.Module, dataset: Dataset, imgsz: int, desc: str = "eval torch") -> dict:
    return evaluate(torch_runner(model), dataset, imgsz, desc=desc)
