"""Calibration images for INT8: drawn from the train split and preprocessed exactly like inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from edgeprune.data.dataset import Dataset
from edgeprune.data.letterbox import letterbox, to_input
from edgeprune.errors import EdgepruneError
from edgeprune.manifest import atomic_write_bytes


def calibration_set(dataset: Dataset, imgsz: int, count: int, seed: int = 0, cache: Path | None = None) -> np.ndarray:
    """(count, 3, imgsz, imgsz) float32 in 0..1; a seeded sample of train images, cached as .npy."""
    if cache is not None and cache.exists():
        data = np.load(cache)
        if data.shape == (min(count, len(dataset.train_images)), 3, imgsz, imgsz):
            return data
    if count <= 0 or not dataset.train_images:
        raise EdgepruneError(f"the calibration set is empty (count={count}, {len(dataset.train_images)} train images)",
                             "use a dataset with train images and calibration_images > 0 in the target profile")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset.train_images), size=min(count, len(dataset.train_images)), replace=False)
    images = [letterbox(Image.open(dataset.train_images[i]), imgsz)[0]
              for i in tqdm(sorted(picks), desc="calibration images", leave=False)]
    data = to_input(images)
    if cache is not None:
        import io

        buffer = io.BytesIO()
        np.save(buffer, data)
        atomic_write_bytes(cache, buffer.getvalue())
    return data
