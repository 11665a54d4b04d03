"""Jetson / TensorRT: explicitly quantized QDQ ONNX, an FP16 fallback, and the exact trtexec command.

The engine is built where TensorRT imports (the Jetson); here the QDQ file is checked statically
against TensorRT's ONNX parser and its accuracy is measured through ONNX Runtime, which executes the
same Q/DQ arithmetic (formats/tensorrt/export.py).
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.formats import register
from edgeprune.formats.base import Capabilities, ExportCache, Format, Unit
from edgeprune.formats.onnx import OnnxFormat, onnx_unit_pattern


@register
class TensorRTFormat(Format):
    caps = Capabilities(name="tensorrt", suffix=".onnx", runtime="tensorrt", precisions=("int8", "fp16"),
                        requires=("onnx", "onnxruntime"),
                        description="Jetson: QDQ INT8 ONNX + FP16 ONNX + trtexec command; engine built where "
                                    "TensorRT imports (host accuracy via ONNX Runtime)",
                        guard_levels=OnnxFormat.caps.guard_levels, host_runtime="onnxruntime",
                        validation_scripts=("validate_tensorrt.py", "validate_onnx.py"),
                        emulation_script="validate_onnx.py", roofline_utilisation=0.15, roofline_overhead_ms=0.2)

    def export(self, model, out: Path, imgsz: int, precision: str = "int8", calibration=None, *,
               float_scope: str = "none", float_units: tuple = (), cache: ExportCache | None = None) -> Path:
        from edgeprune.formats.tensorrt.export import export

        self.check_precision(precision)
        return export(model, out, imgsz, precision, calibration, float_scope, float_units, cache)

    def unit_pattern(self, unit: Unit) -> str:
        return onnx_unit_pattern(unit)

    def load_runner(self, path: Path, threads: int = 2, imgsz: int | None = None, boxes_normalized: bool = True):
        return OnnxFormat().load_runner(path, threads, imgsz, boxes_normalized)

    def inspect(self, path: Path) -> dict:
        from edgeprune.formats.onnx.qdq import qdq_checks
        from edgeprune.formats.tensorrt.export import check_for_tensorrt

        checks = qdq_checks(path)
        return {"tensorrt_checks": check_for_tensorrt(path, checks)} if checks["qdq_pairs"] else {}
