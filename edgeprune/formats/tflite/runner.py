"""LiteRT (ai-edge-litert) runner for .tflite files, XNNPACK on the CPU: the device module's backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.formats.base import Runner
from edgeprune.formats.graph import denormalize


def load(path: Path, threads: int = 2, imgsz: int | None = None, boxes_normalized: bool = True):
    from edgeprune.device.edgeprune_detector import TFLiteBackend, is_end2end

    backend = TFLiteBackend(Path(path), threads=threads)
    size = (imgsz or int(backend.input_shape[2])) if boxes_normalized else 1

    def run(batch: np.ndarray) -> np.ndarray:
        raw = np.concatenate([backend.run(batch[i : i + 1]) for i in range(len(batch))])
        return denormalize(raw, size, end2end=is_end2end(raw))

    return Runner(run, "litert", path, np.dtype(backend.inp["dtype"]).name, np.dtype(backend.out["dtype"]).name)
