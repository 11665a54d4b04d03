"""A video made of dataset images, so the stream integrations can be benchmarked on the bundled data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgeprune.data.dataset import Dataset


def write_video(dataset: Dataset, out: Path, fps: float = 30.0, frames: int = 150, size: int = 320) -> Path:
    """MJPG .avi of the val images (cycled), each resized to size x size; written to a temp name first."""
    import cv2

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    try:
        for i in range(frames):
            image = Image.open(dataset.val_images[i % len(dataset.val_images)]).convert("RGB").resize((size, size))
            writer.write(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    partial.replace(out)
    return out
