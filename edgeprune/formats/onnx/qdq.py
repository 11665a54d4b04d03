"""Explicitly quantized (QDQ) ONNX: what TensorRT builds INT8 engines from, and what ONNX Runtime runs.

Quantizing every op of a YOLO graph zeroes its class scores; quantizing the convolutions only
(weights per-channel, activations per-tensor, both symmetric so every zero-point is 0 as
TensorRT requires) keeps the decode (DFL softmax, box arithmetic, sigmoid) in float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.formats.base import ExportCache
from edgeprune.manifest import atomic_write_bytes, scratch_dir

QUANTIZED_OPS = ("Conv",)
# Node-name patterns (torch.onnx names nodes by module path) kept in float per accuracy-guard level.
# The box/score decoding is float at every level: it has no Conv (the deploy graph's DFL integral is a
# MatMul, edgeprune.formats.graph.LastAxisDFL), and only Convs are quantized.
FLOAT_NODE_PATTERNS = {
    "none": (),
    "head": (r"/(one2one_)?cv[23]\.\d+/(one2one_)?cv[23]\.\d+\.2/Conv$",),
}
# Activation-range calibration. Min/max lets one outlier pixel stretch a tensor's scale; the 99.999th
# percentile of |activation| clips those few and keeps resolution for the rest (measured on the Jetson
# model with decode + head outputs in float: min/max 0.454, percentile 0.458 vs FP32 0.467 mAP50-95).
CALIBRATION_METHODS = ("minmax", "percentile")
PERCENTILE = 99.999


def parse_level(level: str) -> tuple[str, str]:
    """A guard level is "<float_scope>" or "<float_scope>/<calibration method>" (default minmax)."""
    scope, _, method = level.partition("/")
    method = method or "minmax"
    if scope not in FLOAT_NODE_PATTERNS or method not in CALIBRATION_METHODS:
        raise EdgepruneError(f"unknown INT8 guard level {level!r}",
                             f"use <{'|'.join(FLOAT_NODE_PATTERNS)}>[/<{'|'.join(CALIBRATION_METHODS)}>]")
    return scope, method


def float_nodes(fp32_onnx: Path, float_scope: str, float_units: tuple = ()) -> list[str]:
    import re

    import onnx

    from edgeprune.formats.onnx import onnx_unit_pattern

    patterns = FLOAT_NODE_PATTERNS[float_scope] + tuple(onnx_unit_pattern(u) for u in float_units)
    return [n.name for n in onnx.load(str(fp32_onnx)).graph.node if any(re.search(p, n.name) for p in patterns)]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an in-memory calibration array."""

    def __init__(self, name: str, data: np.ndarray):
        self.items = iter([{name: data[i : i + 1]} for i in range(len(data))])

    def get_next(self):
        return next(self.items, None)


def quantize_qdq(fp32_onnx: Path, calibration: np.ndarray, out: Path, float_scope: str = "none",
                 float_units: tuple = (), cache: ExportCache | None = None) -> Path:
    """`float_scope` is a guard level: which nodes stay float, optionally "/percentile" calibration;
    `float_units` adds whole blocks (edgeprune.formats.base.Unit). `cache` keeps the pre-processed
    graph and the activation ranges (per method) for the guard's next candidate."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration is None or len(calibration) == 0:
        raise EdgepruneError("INT8 export needs calibration images, but the calibration set is empty",
                             "point DATA at a dataset whose train split has images, or raise calibration_images")
    scope, method = parse_level(float_scope)
    input_name = onnx.load(str(fp32_onnx)).graph.input[0].name
    ranges = ({"calibrate_method": CalibrationMethod.Percentile, "extra": {"CalibPercentile": PERCENTILE}}
              if method == "percentile" else {"calibrate_method": CalibrationMethod.MinMax, "extra": {}})
    with scratch_dir("qdq") as tmp:
        cache = cache or ExportCache(Path(tmp))
        prepared = cache.get("prepared.onnx", lambda path: quant_pre_process(
            str(fp32_onnx), str(path), skip_symbolic_shape=True) or path)
        ranges["cache"] = cache.folder / f"ranges_{method}.json"  # written by the first quantization, read after
        quantized = Path(tmp) / "qdq.onnx"
        try:
            _quantize(prepared, quantized, _Reader(input_name, calibration), ranges,
                      float_nodes(fp32_onnx, scope, float_units))
        except ValueError as error:  # percentile histograms cannot bin a constant tensor
            raise EdgepruneError(f"INT8 calibration ({method}) failed: {error}",
                                 "use another guard level (min/max calibration)") from None
        atomic_write_bytes(out, quantized.read_bytes())
    return out


def _quantize(prepared: Path, quantized: Path, reader, ranges: dict, exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(str(prepared), str(quantized), reader,
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=ranges["calibrate_method"], calibration_cache_path=ranges["cache"],
                    nodes_to_exclude=exclude,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, **ranges["extra"]})


def qdq_checks(path: Path) -> dict:
    """Static checks TensorRT cares about: onnx checker, all zero-points 0, static input shape, op census."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    inits = {i.name: i for i in model.graph.initializer}
    zero_points, ops = [], {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits.get(node.input[2])
            if zp is not None:
                zero_points.append(int(np.abs(numpy_helper.to_array(zp)).max()))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"checker": "ok", "qdq_pairs": ops.get("QuantizeLinear", 0), "max_abs_zero_point": max(zero_points or [0]),
            "static_input_shape": all(d > 0 for d in dims), "input_shape": dims, "ops": dict(sorted(ops.items()))}
