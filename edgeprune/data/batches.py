"""Labelled batches in Ultralytics' training layout, for criteria that need the detection loss (taylor).

Images go through the same letterbox as calibration and evaluation; boxes are mapped into the
letterboxed frame and given as normalised xywh, as Ultralytics' v8DetectionLoss expects
(`img` float 0..1 NCHW, `batch_idx` (n,), `cls` (n, 1), `bboxes` (n, 4)).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from edgeprune.data.dataset import Dataset
from edgeprune.data.letterbox import letterbox, to_input
from edgeprune.errors import EdgepruneError

DEFAULT_IMAGES = 64


def loss_batches(dataset: Dataset, imgsz: int, images: int = DEFAULT_IMAGES, batch: int = 8,
                 seed: int = 0) -> list[dict]:
    """A seeded sample of `images` train images with their labels, in batches of `batch`."""
    if images <= 0 or not dataset.train_images:
        raise EdgepruneError(f"no labelled images for the loss ({images} requested, "
                             f"{len(dataset.train_images)} train images)", "use a dataset with train images")
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(dataset.train_images), size=min(images, len(dataset.train_images)), replace=False))
    paths = [dataset.train_images[i] for i in picks]
    return [_batch(dataset, paths[i : i + batch], imgsz) for i in range(0, len(paths), batch)]


def _batch(dataset: Dataset, paths, imgsz: int) -> dict:
    pixels, rows = [], []
    for index, path in enumerate(paths):
        with Image.open(path) as image:
            width, height = image.size
            canvas, box = letterbox(image, imgsz)
        pixels.append(canvas)
        for cls, x, y, w, h in dataset.labels(path):
            rows.append((index, cls, (x * width * box.scale + box.pad_x) / imgsz,
                         (y * height * box.scale + box.pad_y) / imgsz,
                         w * width * box.scale / imgsz, h * height * box.scale / imgsz))
    table = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
    return {"img": torch.from_numpy(to_input(pixels)), "batch_idx": table[:, 0], "cls": table[:, 1:2],
            "bboxes": table[:, 2:6]}
