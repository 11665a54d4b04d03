"""LiteRT (ai-edge-litert) runner for .tflite files, XNNPACK on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.export.graph import denormalize


def load(path: Path, threads: int = 2, imgsz: int | None = None, boxes_normalized: bool = True):
    from ai_edge_litert.interpreter import Interpreter

    from edgeprune.runtimes import Runner

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    size = (imgsz or int(inp["shape"][2])) if boxes_normalized else 1

    def run_one(x: np.ndarray) -> np.ndarray:
        if inp["dtype"] != np.float32:  # integer input: quantize with the tensor's own parameters
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    def run(batch: np.ndarray) -> np.ndarray:
        raw = np.concatenate([run_one(batch[i : i + 1]) for i in range(len(batch))])
        return denormalize(raw, size, end2end=raw.shape[-1] == 6 and raw.shape[1] != 6)

    return Runner(run, "litert", path, np.dtype(inp["dtype"]).name, np.dtype(out["dtype"]).name)
