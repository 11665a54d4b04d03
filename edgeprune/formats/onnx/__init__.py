"""Plain ONNX (opset 17, static shape) for ONNX Runtime, and the source of the TensorRT format.

INT8 is explicit QDQ of the convolutions only (formats/onnx/qdq.py); FP16 keeps float32 I/O.
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.formats import register
from edgeprune.formats.base import Capabilities, ExportCache, Format, Unit


def onnx_unit_pattern(unit: Unit) -> str:
    """torch.onnx names nodes by module path: /model/model.<block>/... (DeployGraph wraps the model)."""
    if unit.scale is None:
        return rf"^/model/model\.{unit.block}/"
    return rf"^/model/model\.{unit.block}/(one2one_)?cv[23]\.{unit.scale}/"


@register
class OnnxFormat(Format):
    caps = Capabilities(name="onnx", suffix=".onnx", runtime="onnxruntime", precisions=("fp32", "fp16", "int8"),
                        requires=("onnx", "onnxruntime"),
                        description="ONNX (opset 17, static shape) for ONNX Runtime / TensorRT; INT8 as QDQ (Conv only, "
                                    "symmetric, per-channel weights)",
                        guard_levels=("none", "head", "head/percentile"), host_runtime="onnxruntime",
                        validation_scripts=("validate_onnx.py",), emulation_script="validate_onnx.py",
                        roofline_utilisation=0.3, roofline_overhead_ms=0.2)

    def export(self, model, out: Path, imgsz: int, precision: str = "fp32", calibration=None, *,
               float_scope: str = "none", float_units: tuple = (), cache: ExportCache | None = None) -> Path:
        from edgeprune.formats.onnx import export

        self.check_precision(precision)
        if precision == "fp32":
            return export.export_fp32(model, imgsz, out)
        if precision == "fp16":
            return export.export_fp16(model, imgsz, out)
        return export.export_int8(model, imgsz, out, calibration, float_scope, float_units, cache)

    def unit_pattern(self, unit: Unit) -> str:
        return onnx_unit_pattern(unit)

    def load_runner(self, path: Path, threads: int = 2, imgsz: int | None = None, boxes_normalized: bool = True):
        from edgeprune.formats.onnx.runner import load

        return load(path, threads=threads, imgsz=imgsz, boxes_normalized=boxes_normalized)

    def inspect(self, path: Path) -> dict:
        from edgeprune.formats.onnx.qdq import qdq_checks

        checks = qdq_checks(path)
        return {"onnx_checks": checks} if checks["qdq_pairs"] else {}
