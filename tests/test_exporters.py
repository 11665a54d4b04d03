"""Every registered exporter runs on a tiny model and its artefact agrees with the PyTorch model."""

import numpy as np
import pytest
import torch

from edgeprune.export import registry
from edgeprune.export.graph import deploy_graph, denormalize
from edgeprune.targets import available_targets, load_target

IMGSZ = 64


def test_registry_covers_every_target_profile():
    names = {e.caps.name for e in registry.all_exporters()}
    assert {"tflite", "onnx", "tensorrt", "coreml"} <= names
    for target in available_targets():
        profile = load_target(target)
        assert profile.artefact in names, f"{target} needs exporter {profile.artefact}"
        assert profile.precision in registry.get_exporter(profile.artefact).caps.precisions


@pytest.fixture(scope="module")
def model():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("yolo11n.yaml", nc=6, verbose=False).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name, precision", [("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"),
                                             ("tensorrt", "int8")])
def test_onnx_family_exports_agree_with_pytorch(model, name, precision, tmp_path):
    from edgeprune import runtimes

    calib = np.random.default_rng(0).random((4, 3, IMGSZ, IMGSZ), dtype=np.float32)
    out = registry.get_exporter(name).export(model, tmp_path / f"m_{precision}.onnx", IMGSZ, precision, calib)
    x = calib[:2]
    ref = denormalize(deploy_graph(model, IMGSZ)(torch.from_numpy(x)).numpy(), IMGSZ)
    got = runtimes.load(out, threads=1).run(x)
    assert got.shape == ref.shape and np.isfinite(got).all()
    if precision == "int8":  # a random model's INT8 numbers mean little: check the graph is TensorRT-ready
        from edgeprune.export.tensorrt import check_for_tensorrt

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
    from edgeprune.export.coreml import inspect_spec

    out = registry.get_exporter("coreml").export(model, tmp_path / "model_int8.mlpackage", IMGSZ, "int8",
                                                 names={0: "circle", 1: "square"})
    spec = inspect_spec(out)
    assert spec["input"] == "images" and spec["input_type"] == "imageType"
    assert spec["quantized_weight_ops"] > 10, spec["ops"]
    assert spec["metadata"]["imgsz"] == str(IMGSZ) and "circle" in spec["metadata"]["names"]
    assert spec["ops"].get("conv", 0) > 50
