"""iOS / CoreML: an ML Program `.mlpackage` with an image input, INT8 weights and class metadata.

Precision: weights are linearly quantized to int8 (symmetric, per-channel); activations stay
float16, the ML Program default that the Neural Engine executes. coremltools can also calibrate
int8 activations, but only by running the model, and CoreML prediction exists on macOS alone;
on Linux the INT8-activation path is therefore not offered rather than shipped uncalibrated.
On Linux the package is verified by reading its spec back (input type and scaling, op census,
quantized weight ops, metadata); prediction is tested only where coremltools can predict.
"""

from __future__ import annotations

import json
import shutil
import types
from collections import Counter
from pathlib import Path

import torch

from edgeprune.formats.graph import deploy_graph
from edgeprune.manifest import scratch_dir

QUANTIZED_WEIGHT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")


def _indexed_gather(head, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The one-to-one head's row selection by indexing, not torch.gather: coremltools types the gather's int64
    indices as fp32 (they pass through a floor division) and then refuses them."""
    rows = torch.arange(x.shape[0])[:, None]
    return x[rows, index]


def convert(model: torch.nn.Module, imgsz: int, precision: str, names: dict | None = None):
    import coremltools as ct

    graph = deploy_graph(model, imgsz)
    if graph.end2end:
        head = graph.model.model[-1]
        head._gather = types.MethodType(_indexed_gather, head)
    example = torch.zeros(1, 3, imgsz, imgsz)
    with torch.no_grad():
        graph(example)  # the head caches anchors on its first call; trace the steady state
    traced = torch.jit.trace(graph, example, strict=False)
    mlmodel = ct.convert(
        traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
        inputs=[ct.ImageType(name="images", shape=example.shape, scale=1 / 255.0, color_layout=ct.colorlayout.RGB)],
        outputs=[ct.TensorType(name="output")],
        compute_precision=ct.precision.FLOAT16 if precision in ("fp16", "int8") else ct.precision.FLOAT32)
    if precision == "int8":
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        config = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8"))
        mlmodel = linear_quantize_weights(mlmodel, config=config)
    mlmodel.short_description = ("edgeprune YOLO detector: output (1, k, 6) x1 y1 x2 y2 / imgsz, score, class (NMS-free)"
                                 if graph.end2end else
                                 "edgeprune YOLO detector: output (1, 4+nc, anchors), boxes xywh / imgsz, scores")
    mlmodel.user_defined_metadata.update({"imgsz": str(imgsz), "names": json.dumps(names or {}),
                                          "precision": f"weights {precision}, activations fp16",
                                          "boxes_normalized": "true"})
    return mlmodel


def inspect_spec(path: Path) -> dict:
    """Read an .mlpackage back (works on Linux): input type, op census, quantized-weight ops, metadata."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    inp = spec.description.input[0]
    ops: Counter = Counter()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            ops.update(op.type for op in block.operations)
    return {"input": inp.name, "input_type": inp.type.WhichOneof("Type"),
            "ops": dict(sorted(ops.items())),
            "quantized_weight_ops": sum(ops[o] for o in QUANTIZED_WEIGHT_OPS),
            "metadata": dict(spec.description.metadata.userDefined)}


def export(model, out: Path, imgsz: int, precision: str, names: dict | None = None) -> Path:
    mlmodel = convert(model, imgsz, precision, names or getattr(model, "names", None))
    with scratch_dir("coreml", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        mlmodel.save(str(staged))
        inspect_spec(staged)  # refuse to publish a package that cannot be read back
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)
    return out
