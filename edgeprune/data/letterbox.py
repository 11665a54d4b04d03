"""The one preprocessing used for calibration, evaluation and deployment: letterbox to a square, RGB, 0..1.

Calibrating on differently preprocessed images than the device sees is a classic source of INT8
accuracy loss, so every path that feeds a model goes through `letterbox`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PAD_VALUE = 114  # Ultralytics' grey


@dataclass(frozen=True)
class Letterbox:
    scale: float
    pad_x: float
    pad_y: float

    def to_original(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Map xyxy boxes from model input pixels back to the original image, clipped to it."""
        out = boxes.astype(np.float32).copy()
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad_x) / self.scale).clip(0, width)
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad_y) / self.scale).clip(0, height)
        return out


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio, pad centrally to size x size; returns HWC uint8 RGB and the mapping."""
    image = image.convert("RGB")
    scale = min(size / image.width, size / image.height)
    new_w, new_h = round(image.width * scale), round(image.height * scale)
    resized = image.resize((new_w, new_h), Image.BILINEAR) if (new_w, new_h) != image.size else image
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = np.asarray(resized)
    return canvas, Letterbox(scale, float(pad_x), float(pad_y))


def to_input(batch_hwc: list[np.ndarray]) -> np.ndarray:
    """uint8 HWC images -> float32 NCHW in 0..1, the input every exported model takes."""
    return np.ascontiguousarray(np.stack(batch_hwc).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
