"""Accuracy and latency of an exported file, measured by running it in its own runtime.

CoreML packages cannot predict on Linux: their spec is verified and a labelled int8-weight PyTorch
proxy of the source model is measured instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgeprune import runtimes
from edgeprune.data.dataset import Dataset
from edgeprune.evaluation.detection import evaluate, torch_runner
from edgeprune.evaluation.latency import measure


def coreml_metrics(artefact: Path, model: torch.nn.Module, dataset: Dataset, imgsz: int,
                   limit: int | None = None) -> dict:
    from edgeprune.exporters.coreml import inspect_spec
    from edgeprune.quantize.weight_proxy import int8_weight_proxy

    proxy = int8_weight_proxy(model)
    metrics = evaluate(torch_runner(proxy), dataset, imgsz, desc="eval int8-weight proxy", limit=limit)
    metrics["latency"] = measure(torch_runner(proxy), imgsz)
    metrics["runtime"] = "proxy: PyTorch with the package's int8 weights (CoreML cannot predict on Linux)"
    metrics["size_bytes"] = sum(p.stat().st_size for p in artefact.rglob("*") if p.is_file())
    metrics["coreml_spec"] = inspect_spec(artefact)
    return metrics


def artefact_metrics(artefact: Path, dataset: Dataset, imgsz: int, threads: int = 2, limit: int | None = None,
                     model: torch.nn.Module | None = None) -> dict:
    """mAP (pycocotools), latency, size and I/O dtypes of the file; `model` is the source (CoreML proxy only)."""
    if artefact.suffix == ".mlpackage":
        return coreml_metrics(artefact, model, dataset, imgsz, limit)
    runner = runtimes.load(artefact, threads=threads, imgsz=imgsz)
    metrics = evaluate(runner.run, dataset, imgsz, desc=f"eval {artefact.name}", limit=limit)
    metrics["latency"] = measure(runner.run, imgsz)
    metrics["runtime"] = f"{runner.runtime} ({threads} threads)"
    metrics["size_bytes"] = artefact.stat().st_size
    metrics["io_dtypes"] = {"input": runner.input_dtype, "output": runner.output_dtype}
    if artefact.suffix == ".tflite":
        from edgeprune.exporters.inspect_tflite import tensor_dtype_census

        metrics["tensor_dtypes"] = tensor_dtype_census(artefact)
    elif artefact.suffix == ".onnx" and "int8" in artefact.name:
        from edgeprune.exporters.tensorrt import check_for_tensorrt

        metrics["tensorrt_checks"] = check_for_tensorrt(artefact)
    return metrics
