"""TFLite conversion (litert-torch) and INT8 (ai-edge-quantizer), without TensorFlow.

INT8 here is full integer inside the graph (int8 weights, int8 activations, int32 biases); the
graph's input and output stay float32, quantized/dequantized by the first/last op, so a device
feeds the same normalised image as every other runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.formats.base import ExportCache
from edgeprune.formats.graph import deploy_graph
from edgeprune.manifest import atomic_write_bytes, scratch_dir

SIGNATURE = "serving_default"
# ai-edge-quantizer matches op scopes (output tensor names + ";"); litert-torch names tensors by module path.
# The graph's final concat of boxes and scores is named after the signature output, not a module: in
# int8 its single 1/255 step is one pixel of box error at 256 px (measured: 0.431 -> 0.451 mAP50-95).
DECODE_SCOPES = (r"head\.\w+_\d+;\d+;$", r"DFL_dfl", r"DeployGraph;\d+;$",  # DFL, dist2bbox, sigmoid, concat
                 rf"^{SIGNATURE}_output_\d+")
HEAD_OUTPUT_SCOPES = (r"head\.\w+_\d+/torch\.nn\.modules\.container\.Sequential_\d+/torch\.nn\.modules\.conv\.Conv2d_\d+;",)
FLOAT_SCOPES = {"none": (), "decode": DECODE_SCOPES, "head": DECODE_SCOPES + HEAD_OUTPUT_SCOPES}


def convert_fp32(model: torch.nn.Module, imgsz: int, out: Path) -> Path:
    import litert_torch

    graph = deploy_graph(model, imgsz)
    edge_model = litert_torch.convert(graph, (torch.zeros(1, 3, imgsz, imgsz),))
    edge_model.export(str(out))
    return out


def _quantizer(fp32_path: Path, float_ops: tuple[str, ...]):
    from ai_edge_quantizer import qtyping, quantizer, recipe

    qt = quantizer.Quantizer(str(fp32_path))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        qt.update_quantization_recipe(regex=".*", operation_name=op, algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    for regex in float_ops:
        qt.update_quantization_recipe(regex=regex, operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                      algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    return qt


def calibrate(fp32_path: Path, calibration: np.ndarray) -> dict:
    """Activation ranges of every tensor of the float graph: valid for any choice of ops kept in float."""
    if calibration is None or len(calibration) == 0:
        raise EdgepruneError("INT8 export needs calibration images, but the calibration set is empty",
                             "point DATA at a dataset whose train split has images, or raise calibration_images")
    input_name = _input_name(fp32_path)
    samples = [{input_name: calibration[i : i + 1].astype(np.float32)} for i in range(len(calibration))]
    return _quantizer(fp32_path, ()).calibrate({SIGNATURE: samples})


def quantize_int8(fp32_path: Path, calibration: np.ndarray, out: Path, float_ops: tuple[str, ...] = (),
                  ranges: dict | None = None) -> Path:
    """Static INT8 with ai-edge-quantizer; `float_ops` are tensor-name regexes kept in float. `ranges`
    (from `calibrate`) skips calibrating again."""
    ranges = ranges if ranges is not None else calibrate(fp32_path, calibration)
    _quantizer(fp32_path, float_ops).quantize(calibration_result=ranges).export_model(str(out), overwrite=True)
    return out


def _input_name(path: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(path)).get_signature_list()
    return signatures[SIGNATURE]["inputs"][0]


def export(model: torch.nn.Module, out: Path, imgsz: int, precision: str, calibration, float_scope: str = "none",
           unit_patterns: tuple[str, ...] = (), cache: ExportCache | None = None) -> Path:
    """FP32, or INT8 with FLOAT_SCOPES[float_scope] and `unit_patterns` kept in float; `cache` shares the FP32
    conversion and the calibration between the accuracy guard's candidates."""
    with scratch_dir("tflite") as tmp:
        cache = cache or ExportCache(Path(tmp))
        final = fp32 = cache.get(f"fp32_{imgsz}.tflite", lambda path: convert_fp32(model, imgsz, path))
        if precision == "int8":
            ranges = cache.get("calibration", lambda _: calibrate(fp32, calibration))
            float_ops = FLOAT_SCOPES[float_scope] + tuple(unit_patterns)
            final = quantize_int8(fp32, calibration, Path(tmp) / "model_int8.tflite", float_ops, ranges)
        atomic_write_bytes(out, final.read_bytes())
    return out
