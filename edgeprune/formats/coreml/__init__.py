"""iOS / CoreML: an ML Program `.mlpackage` with an image input, INT8 weights and class metadata.

CoreML predicts on macOS only: on Linux the package's spec is read back and a labelled PyTorch proxy
with the same int8 weights is measured instead (formats/coreml/proxy.py).
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.formats import register
from edgeprune.formats.base import Capabilities, ExportCache, Format


@register
class CoreMLFormat(Format):
    caps = Capabilities(name="coreml", suffix=".mlpackage", runtime="coreml", precisions=("int8", "fp16", "fp32"),
                        requires=("coremltools",),
                        description="iOS: ML Program .mlpackage, image input, INT8 weights / FP16 activations; "
                                    "spec verified on Linux, prediction on macOS only",
                        validation_scripts=("validate_coreml.py",), roofline_utilisation=0.2,
                        roofline_overhead_ms=0.5)

    def export(self, model, out: Path, imgsz: int, precision: str = "int8", calibration=None, *,
               float_scope: str = "none", float_units: tuple = (), cache: ExportCache | None = None,
               names: dict | None = None) -> Path:
        """Weights only are quantized (no calibration, no float scopes): see formats/coreml/export.py."""
        from edgeprune.formats.coreml.export import export

        self.check_precision(precision)
        return export(model, out, imgsz, precision, names)

    def host_proxy(self, model):
        from edgeprune.formats.coreml.proxy import int8_weight_proxy

        return int8_weight_proxy(model)

    def inspect(self, path: Path) -> dict:
        from edgeprune.formats.coreml.export import inspect_spec

        return {"coreml_spec": inspect_spec(path)}
