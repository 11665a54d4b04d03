"""Plain ONNX export (FP32, FP16) for ONNX Runtime and as the source for TensorRT."""

from __future__ import annotations

from pathlib import Path

import torch

from edgeprune.errors import EdgepruneError
from edgeprune.exporters.graph import deploy_graph
from edgeprune.exporters.registry import Capabilities, ExportCache, register
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


@register
class OnnxExporter:
    caps = Capabilities(name="onnx", suffix=".onnx", runtime="onnxruntime", precisions=("fp32", "fp16", "int8"),
                        requires=("onnx", "onnxruntime"),
                        description="ONNX (opset 17, static shape) for ONNX Runtime / TensorRT; INT8 as QDQ (Conv only, "
                                    "symmetric, per-channel weights)",
                        guard_levels=("none", "head", "head/percentile"))

    def export(self, model, out: Path, imgsz: int, precision: str = "fp32", calibration=None,
               float_scope: str = "none", float_units: tuple = (), cache: ExportCache | None = None) -> Path:
        """`float_scope`/`float_units`: what INT8 keeps in float (edgeprune.quantize.guard); `cache` shares the
        FP32 export and calibration between the guard's candidates."""
        if precision == "fp32":
            return export_fp32(model, imgsz, out)
        if precision == "fp16":
            return export_fp16(model, imgsz, out)
        if precision == "int8":
            from edgeprune.quantize.onnx_qdq import quantize_qdq

            with scratch_dir("onnx8") as tmp:
                cache = cache or ExportCache(Path(tmp))
                fp32 = cache.get(f"fp32_{imgsz}.onnx", lambda path: export_fp32(model, imgsz, path))
                return quantize_qdq(fp32, calibration, out, float_scope, float_units, cache)
        raise EdgepruneError(f"onnx export does not support precision {precision!r}", "use fp32, fp16 or int8")


def export_fp16(model: torch.nn.Module, imgsz: int, out: Path) -> Path:
    """FP16 weights and activations with float32 input/output, so callers feed the same tensors."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with scratch_dir("onnx16") as tmp:
        fp32 = export_fp32(model, imgsz, Path(tmp) / "fp32.onnx")
        proto = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        atomic_write_bytes(out, proto.SerializeToString())
    return out
