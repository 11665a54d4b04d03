"""Every registered exporter runs on a tiny model and its artefact agrees with the PyTorch model."""

import numpy as np
import pytest
import torch

from edgeprune import formats
from edgeprune.formats.graph import deploy_graph, denormalize
from edgeprune.targets import available_targets, load_target

IMGSZ = 64


def test_registry_covers_every_target_profile():
    names = {e.caps.name for e in formats.all_formats()}
    assert {"tflite", "onnx", "tensorrt", "coreml"} <= names
    for target in available_targets():
        profile = load_target(target)
        assert profile.device.format in names, f"{target} needs exporter {profile.device.format}"
        assert profile.recipe.precision in formats.get(profile.device.format).caps.precisions


@pytest.fixture(scope="module")
def model():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("yolo11n.yaml", nc=6, verbose=False).eval()


def test_qdq_guard_levels_parse_and_reject_unknown():
    from edgeprune.errors import EdgepruneError
    from edgeprune.formats.onnx.qdq import parse_level

    assert parse_level("head") == ("head", "minmax")
    assert parse_level("head/percentile") == ("head", "percentile")
    for level in formats.get("tensorrt").caps.guard_levels:
        parse_level(level)
    with pytest.raises(EdgepruneError, match="unknown INT8 guard level"):
        parse_level("head/entropy")


def test_percentile_calibration_clips_outliers_that_minmax_keeps(model, tmp_path):
    """One outlier value sets the min/max input scale; the 99.999th percentile ignores it."""
    import onnx
    from onnx import numpy_helper

    from edgeprune.formats.onnx.export import export_fp32
    from edgeprune.formats.onnx.qdq import quantize_qdq
    from test_device_scripts import _informative  # random init leaves constant tensors a histogram cannot bin

    model = _informative(model)
    calib = np.random.default_rng(0).random((16, 3, IMGSZ, IMGSZ), dtype=np.float32) * 0.2
    calib[0, 0, 0, 0] = 1.0  # one saturated value among ~200k (below 1e-5)
    fp32 = export_fp32(model, IMGSZ, tmp_path / "fp32.onnx")

    def input_scale(level):
        out = quantize_qdq(fp32, calib, tmp_path / f"{level.replace('/', '_')}.onnx", level)
        graph = onnx.load(str(out)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        first_q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == graph.input[0].name)
        return float(inits[first_q.input[1]])

    assert input_scale("head/percentile") < 0.5 * input_scale("head")


@pytest.mark.slow
@pytest.mark.parametrize("name, precision", [("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"),
                                             ("tensorrt", "int8")])
def test_onnx_family_exports_agree_with_pytorch(model, name, precision, tmp_path):
    from edgeprune import formats

    calib = np.random.default_rng(0).random((4, 3, IMGSZ, IMGSZ), dtype=np.float32)
    out = formats.get(name).export(model, tmp_path / f"m_{precision}.onnx", IMGSZ, precision, calib)
    x = calib[:2]
    ref = denormalize(deploy_graph(model, IMGSZ)(torch.from_numpy(x)).numpy(), IMGSZ)
    got = formats.load_runner(out, threads=1).run(x)
    assert got.shape == ref.shape and np.isfinite(got).all()
    if precision == "int8":  # a random model's INT8 numbers mean little: check the graph is TensorRT-ready
        from edgeprune.formats.tensorrt.export import check_for_tensorrt

        checks = check_for_tensorrt(out)
        assert checks["qdq_pairs"] > 50 and checks["max_abs_zero_point"] == 0 and checks["static_input_shape"]
    else:
        tolerance = {"fp32": 1e-3, "fp16": 0.5}[precision]  # boxes in pixels of a 64 px input
        assert np.abs(got - ref).max() < tolerance
    if name == "tensorrt":
        assert (tmp_path / "model_fp16.onnx").exists() and "trtexec --onnx=m_int8.onnx --int8" in (
            tmp_path / "build_engine.sh").read_text()


@pytest.mark.slow
def test_coreml_package_spec(model, tmp_path):
    pytest.importorskip("coremltools")
    from edgeprune.formats.coreml.export import inspect_spec

    out = formats.get("coreml").export(model, tmp_path / "model_int8.mlpackage", IMGSZ, "int8",
                                                 names={0: "circle", 1: "square"})
    spec = inspect_spec(out)
    assert spec["input"] == "images" and spec["input_type"] == "imageType"
    assert spec["quantized_weight_ops"] > 10, spec["ops"]
    assert spec["metadata"]["imgsz"] == str(IMGSZ) and "circle" in spec["metadata"]["names"]
    assert spec["ops"].get("conv", 0) > 50
