"""Accuracy and latency of an exported file, measured by running it in its own runtime.

A format that cannot run here (CoreML off macOS) offers a labelled PyTorch proxy of the source model,
which is measured instead; every format adds its own static checks of the file (Format.inspect).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgeprune import formats
from edgeprune.data.dataset import Dataset
from edgeprune.evaluation.detection import evaluate, torch_runner
from edgeprune.evaluation.latency import measure
from edgeprune.formats.base import Format


def artefact_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def artefact_metrics(artefact: Path, dataset: Dataset, imgsz: int, threads: int = 2, limit: int | None = None,
                     model: torch.nn.Module | None = None, fmt: Format | None = None) -> dict:
    """mAP (pycocotools), latency, size and I/O dtypes of the file; `model` is the source (proxy formats only);
    `fmt` defaults to the format that reads the file's suffix."""
    fmt = fmt or formats.for_artefact(artefact)
    if fmt.caps.host_runtime is None:
        proxy = fmt.host_proxy(model)
        metrics = evaluate(torch_runner(proxy), dataset, imgsz, desc=f"eval {fmt.caps.name} proxy", limit=limit)
        metrics["latency"] = measure(torch_runner(proxy), imgsz)
        metrics["runtime"] = (f"proxy: PyTorch with the package's int8 weights ({fmt.caps.name} cannot predict "
                              "on this host)")
    else:
        runner = fmt.load_runner(artefact, threads=threads, imgsz=imgsz)
        metrics = evaluate(runner.run, dataset, imgsz, desc=f"eval {artefact.name}", limit=limit)
        metrics["latency"] = measure(runner.run, imgsz)
        metrics["runtime"] = f"{runner.runtime} ({threads} threads)"
        metrics["io_dtypes"] = {"input": runner.input_dtype, "output": runner.output_dtype}
    metrics["size_bytes"] = artefact_size(artefact)
    return {**metrics, **fmt.inspect(artefact)}
