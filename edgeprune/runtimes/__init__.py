"""Inference backends, one module per runtime, each exposing `load(path, threads) -> Runner`.

A Runner takes a float32 NCHW batch in 0..1 and returns the model's raw output with boxes in
input pixels (DeployGraph's normalisation undone), the layout `evaluate.detection.decode` reads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgeprune.errors import EdgepruneError

RUNTIMES = {"litert": "edgeprune.runtimes.litert", "onnxruntime": "edgeprune.runtimes.onnxruntime"}
SUFFIX_RUNTIME = {".tflite": "litert", ".onnx": "onnxruntime"}


@dataclass
class Runner:
    run: Callable[[np.ndarray], np.ndarray]
    runtime: str
    path: Path
    input_dtype: str
    output_dtype: str


def load(path: str | Path, threads: int = 2, imgsz: int | None = None, runtime: str | None = None,
         boxes_normalized: bool = True) -> Runner:
    """`boxes_normalized=False` for files made by other tools (e.g. Ultralytics' ONNX, boxes in pixels)."""
    path = Path(path)
    runtime = runtime or SUFFIX_RUNTIME.get(path.suffix)
    if runtime not in RUNTIMES:
        raise EdgepruneError(f"no runtime for {path.name}", f"known runtimes: {', '.join(RUNTIMES)}")
    module = importlib.import_module(RUNTIMES[runtime])
    return module.load(path, threads=threads, imgsz=imgsz, boxes_normalized=boxes_normalized)
