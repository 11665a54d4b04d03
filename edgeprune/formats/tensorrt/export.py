"""Jetson / TensorRT: an explicitly quantized QDQ ONNX (what TensorRT 10 builds INT8 engines from),
an FP16 ONNX fallback, and the exact trtexec command; the engine itself is built where TensorRT exists.

TensorRT cannot be installed on a host without NVIDIA's package index, so here the QDQ ONNX is
checked statically (onnx checker, zero-points 0, static shapes, every op on TensorRT's ONNX
operator list) and its accuracy is measured through ONNX Runtime, which executes the same Q/DQ
arithmetic. An engine is built only when `tensorrt` imports (e.g. on the Jetson itself).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.formats.base import ExportCache
from edgeprune.formats.onnx.export import export_fp16, export_int8
from edgeprune.formats.onnx.qdq import qdq_checks
from edgeprune.manifest import atomic_write_bytes, atomic_write_text

# ONNX operators the TensorRT 10 parser supports that YOLO graphs use (TensorRT docs, operators.md); an
# end-to-end head (YOLO26) adds TopK, GatherElements and Mod (Mod needs TensorRT >= 8.5; JetPack 6 ships 10.3).
TENSORRT_OPS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Cast", "Concat", "Constant", "Conv", "ConvTranspose",
    "DequantizeLinear", "Div", "Expand", "Flatten", "Gather", "GatherElements", "Gemm", "GlobalAveragePool",
    "HardSigmoid", "HardSwish", "Identity", "LeakyRelu", "MatMul", "Max", "MaxPool", "Min", "Mod", "Mul", "Pad", "Pow",
    "QuantizeLinear", "ReduceMax", "ReduceMean", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Slice",
    "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "TopK", "Transpose", "Unsqueeze", "Where",
})


def trtexec_command(onnx_name: str, engine_name: str = "model.engine", precision: str = "int8") -> str:
    flags = "--int8 --fp16" if precision == "int8" else "--fp16"
    return (f"trtexec --onnx={onnx_name} {flags} --saveEngine={engine_name} --skipInference "
            f"--builderOptimizationLevel=4 --memPoolSize=workspace:1024MiB")


def check_for_tensorrt(path: Path, checks: dict | None = None) -> dict:
    """`checks`: qdq_checks(path) when the caller already has them."""
    checks = dict(checks or qdq_checks(path))
    unsupported = sorted(set(checks["ops"]) - TENSORRT_OPS)
    checks["unsupported_ops"] = unsupported
    problems = []
    if unsupported:
        problems.append(f"ops TensorRT's ONNX parser lacks: {', '.join(unsupported)}")
    if checks["max_abs_zero_point"] != 0:
        problems.append("non-zero zero-points (TensorRT needs symmetric quantization)")
    if not checks["static_input_shape"]:
        problems.append("dynamic input shape")
    if problems:
        raise EdgepruneError(f"{path.name} is not TensorRT-ready: {'; '.join(problems)}",
                             "report this model family to edgeprune; meanwhile deploy the FP16 ONNX")
    return checks


def build_engine(onnx_path: Path, engine_path: Path, precision: str) -> Path:
    """Build a serialized engine with the TensorRT Python API (only where tensorrt imports)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        raise RuntimeError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT failed to build the engine")
    engine_path.write_bytes(bytes(engine))
    return engine_path


def export(model, out: Path, imgsz: int, precision: str, calibration, float_scope: str = "none",
           float_units: tuple = (), cache: ExportCache | None = None) -> Path:
    """The INT8 (or FP16) ONNX at `out`, the FP16 fallback and build_engine.sh beside it; the engine where
    TensorRT imports."""
    folder = out.parent
    fp16 = folder / "model_fp16.onnx"
    if cache is None:
        export_fp16(model, imgsz, fp16)
    else:  # the guard's candidates differ only in their INT8 file
        shared = cache.get(f"fp16_{imgsz}.onnx", lambda path: export_fp16(model, imgsz, path))
        atomic_write_bytes(fp16, shared.read_bytes())
    if precision == "int8":
        export_int8(model, imgsz, out, calibration, float_scope, float_units, cache)
        check_for_tensorrt(out)
    elif precision == "fp16":
        atomic_write_bytes(out, fp16.read_bytes())
    else:
        raise EdgepruneError(f"tensorrt export does not support precision {precision!r}", "use int8 or fp16")
    atomic_write_text(folder / "build_engine.sh", "#!/bin/sh\n# Build the TensorRT engine on the Jetson "
                      "(JetPack 6.x, TensorRT 10).\nset -e\ncd \"$(dirname \"$0\")\"\n"
                      f"{trtexec_command(out.name, precision=precision)}\n")
    (folder / "build_engine.sh").chmod(0o755)
    if importlib.util.find_spec("tensorrt") is not None:
        build_engine(out, folder / "model.engine", precision)
    return out
