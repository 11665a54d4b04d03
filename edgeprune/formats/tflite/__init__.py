"""TFLite (LiteRT) for Raspberry Pi / Android CPUs (XNNPACK), converted without TensorFlow.

litert-torch converts (formats/tflite/export.py); ai-edge-quantizer makes full INT8 inside the graph
with float32 I/O (formats/tflite/quantize.py); LiteRT runs it here and on the device.
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.formats import register
from edgeprune.formats.base import Capabilities, ExportCache, Format, Unit


@register
class TFLiteFormat(Format):
    caps = Capabilities(name="tflite", suffix=".tflite", runtime="tflite", precisions=("int8", "fp32"),
                        requires=("litert_torch", "ai_edge_quantizer", "ai_edge_litert"),
                        description="LiteRT flatbuffer for Raspberry Pi / Android CPUs (XNNPACK); INT8 via ai-edge-quantizer",
                        guard_levels=("none", "decode", "head"), host_runtime="litert",
                        validation_scripts=("validate_tflite.py",), emulation_script="validate_tflite.py",
                        roofline_utilisation=0.25, roofline_overhead_ms=0.3)

    def export(self, model, out: Path, imgsz: int, precision: str = "int8", calibration=None, *,
               float_scope: str = "none", float_units: tuple = (), cache: ExportCache | None = None) -> Path:
        """`float_scope` keeps part of the graph in float32: "decode" (box/score decoding), "head" (+ final convs);
        `float_units` adds whole blocks."""
        from edgeprune.formats.tflite.export import export

        self.check_precision(precision)
        patterns = tuple(self.unit_pattern(u) for u in float_units)
        return export(model, out, imgsz, precision, calibration, float_scope, patterns, cache)

    def unit_pattern(self, unit: Unit) -> str:
        """litert-torch names tensors <Class>_<attribute or index> per module; ModuleList entries are Sequential_<k>."""
        block = rf"DetectionModel_model/[\w.]+_{unit.block}"
        if unit.scale is None:
            return block + "[/;]"
        return block + rf"/torch\.nn\.modules\.container\.Sequential_{unit.scale}/"

    def load_runner(self, path: Path, threads: int = 2, imgsz: int | None = None, boxes_normalized: bool = True):
        from edgeprune.formats.tflite.runner import load

        return load(path, threads=threads, imgsz=imgsz, boxes_normalized=boxes_normalized)

    def inspect(self, path: Path) -> dict:
        from edgeprune.formats.tflite.inspect import tensor_dtype_census

        return {"tensor_dtypes": tensor_dtype_census(path)}
