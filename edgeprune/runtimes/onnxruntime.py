"""ONNX Runtime runner (CPU execution provider, fixed thread count)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.export.graph import denormalize


def load(path: Path, threads: int = 2, imgsz: int | None = None, boxes_normalized: bool = True):
    import onnxruntime as ort

    from edgeprune.runtimes import Runner

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    size = (imgsz or int(inp.shape[2])) if boxes_normalized else 1
    fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def run(batch: np.ndarray) -> np.ndarray:
        if fixed_batch == 1 and len(batch) > 1:
            raw = np.concatenate([session.run(None, {inp.name: batch[i : i + 1]})[0] for i in range(len(batch))])
        else:
            raw = session.run(None, {inp.name: batch})[0]
        return denormalize(raw, size, end2end=raw.shape[-1] == 6 and raw.shape[1] != 6)

    return Runner(run, "onnxruntime", path, inp.type, out.type)
