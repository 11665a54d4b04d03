"""ONNX export: FP32 via the TorchScript exporter (simplified), FP16 from it, INT8 as QDQ from it."""

from __future__ import annotations

from pathlib import Path

import torch

from edgeprune.formats.base import ExportCache
from edgeprune.formats.graph import deploy_graph
from edgeprune.manifest import atomic_write_bytes, scratch_dir

OPSET = 17


def export_fp32(model: torch.nn.Module, imgsz: int, out: Path) -> Path:
    """Static-shape ONNX via the TorchScript exporter, then simplified with onnxslim."""
    import onnx

    graph = deploy_graph(model, imgsz)
    with scratch_dir("onnx") as tmp:
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(graph, (torch.zeros(1, 3, imgsz, imgsz),), str(raw), opset_version=OPSET,
                          input_names=["images"], output_names=["output"], dynamo=False)
        proto = onnx.load(str(raw))
        try:
            import onnxslim

            proto = onnxslim.slim(proto)
        except Exception:  # simplification is an optimisation, never a requirement
            pass
        onnx.checker.check_model(proto)
        atomic_write_bytes(out, proto.SerializeToString())
    return out


def export_fp16(model: torch.nn.Module, imgsz: int, out: Path) -> Path:
    """FP16 weights and activations with float32 input/output, so callers feed the same tensors."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with scratch_dir("onnx16") as tmp:
        fp32 = export_fp32(model, imgsz, Path(tmp) / "fp32.onnx")
        proto = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        atomic_write_bytes(out, proto.SerializeToString())
    return out


def export_int8(model: torch.nn.Module, imgsz: int, out: Path, calibration, float_scope: str = "none",
                float_units: tuple = (), cache: ExportCache | None = None) -> Path:
    """QDQ INT8 from the FP32 export; `cache` shares that export and the calibration between the guard's candidates."""
    from edgeprune.formats.onnx.qdq import quantize_qdq

    with scratch_dir("onnx8") as tmp:
        cache = cache or ExportCache(Path(tmp))
        fp32 = cache.get(f"fp32_{imgsz}.onnx", lambda path: export_fp32(model, imgsz, path))
        return quantize_qdq(fp32, calibration, out, float_scope, float_units, cache)
