"""ONNX Runtime runner (CPU execution provider, fixed thread count): the device module's backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.formats.base import Runner
from edgeprune.formats.graph import denormalize


def load(path: Path, threads: int = 2, imgsz: int | None = None, boxes_normalized: bool = True):
    from edgeprune.device.edgeprune_detector import OnnxRuntimeBackend, is_end2end

    backend = OnnxRuntimeBackend(Path(path), threads=threads)
    inp, out = backend.session.get_inputs()[0], backend.session.get_outputs()[0]
    size = (imgsz or int(inp.shape[2])) if boxes_normalized else 1
    fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def run(batch: np.ndarray) -> np.ndarray:
        if fixed_batch == 1 and len(batch) > 1:
            raw = np.concatenate([backend.run(batch[i : i + 1]) for i in range(len(batch))])
        else:
            raw = backend.run(batch)
        return denormalize(raw, size, end2end=is_end2end(raw))

    return Runner(run, "onnxruntime", path, inp.type, out.type)
