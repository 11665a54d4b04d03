"""The one preprocessing used for calibration, evaluation and deployment: letterbox to a square, RGB, 0..1.

Calibrating on differently preprocessed images than the device sees is a classic source of INT8
accuracy loss, so every path that feeds a model goes through `letterbox` — and it is the device
module's own letterbox (edgeprune.device), the code every bundle runs, so host and device agree exactly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from edgeprune.device.edgeprune_detector import Letterbox, letterbox as letterbox_array

PAD_VALUE = 114  # Ultralytics' grey; the device letterbox's default

__all__ = ["PAD_VALUE", "Letterbox", "letterbox", "to_input"]


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio, pad centrally to size x size; returns HWC uint8 RGB and the mapping."""
    return letterbox_array(np.asarray(image.convert("RGB")), size, PAD_VALUE)


def to_input(batch_hwc: list[np.ndarray]) -> np.ndarray:
    """uint8 HWC images -> float32 NCHW in 0..1, the input every exported model takes."""
    x = np.ascontiguousarray(np.stack(batch_hwc).transpose(0, 3, 1, 2), dtype=np.float32)
    x /= 255.0  # in place, as the device does: the same float32 rounding
    return x
