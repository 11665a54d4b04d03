"""YOLO26 end to end: its NMS-free one-to-one head through TFLite INT8 and QDQ ONNX, evaluated by running each
artefact, decoded by the device detector, converted to CoreML, and the rpi bundle emulated bit-exact."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeprune.pipeline import DeployRequest, deploy

pytestmark = pytest.mark.slow


def _request(tiny_data, tmp_path, target):
    return DeployRequest(target=target, model="yolo26n.yaml", data=str(tiny_data), out=tmp_path / "dist",
                         run_dir=tmp_path / "run", epochs=1, imgsz=64, calibration_images=4, baseline_epochs=1,
                         flops_reduction=0.3)


def test_yolo26n_nms_free_head_through_tflite_int8_and_qdq_onnx(tiny_data, tmp_path):
    from edgeprune import formats
    from edgeprune.data.dataset import load_dataset
    from edgeprune.device.edgeprune_detector import Detector, decode, is_end2end
    from edgeprune.models.checkpoint import load_model

    rpi = deploy(_request(tiny_data, tmp_path, "rpi"))
    meta = json.loads((rpi.bundle / "metadata.json").read_text())
    assert meta["end2end"] and meta["output"]["nms"].startswith("none"), "the one-to-one head, no NMS on the device"
    tuned = load_model(tmp_path / "run" / "finetune" / "model.pt")
    head = tuned.model[-1]
    assert head.end2end and head.one2one_cv2 is not None, "loaded checkpoints infer with the NMS-free head"
    rows = {r["stage"]: r for r in rpi.rows}
    assert rows["export"]["runtime"].startswith("litert") and "map50_95" in rows["export"], "the .tflite was run"

    artefact = rpi.bundle / "model_int8.tflite"
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    raw = formats.load_runner(artefact, threads=1, imgsz=64).run(x)
    anchors = 8 * 8 + 4 * 4 + 2 * 2  # 64 px at strides 8, 16, 32: top-k keeps at most every anchor
    assert is_end2end(raw) and raw.shape == (1, anchors, 6), raw.shape

    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(load_dataset(tiny_data).val_images[0]))
    detector = Detector.from_bundle(rpi.bundle, threads=1, conf=-1.0)  # every row, even INT8 scores of exactly 0
    found = detector(image)
    assert len(found) == anchors and found == sorted(found, key=lambda d: -d.score), "rows decoded, best first"
    h, w = image.shape[:2]
    assert all(0 <= d.x1 <= d.x2 <= w and 0 <= d.y1 <= d.y2 <= h and 0 <= d.class_id < 6 for d in found)
    boxes, scores, classes = decode(raw[0], True, -1.0, 0.7, 300, 64)
    assert len(scores) == anchors and np.all(np.diff(scores) <= 0)

    script = subprocess.run([sys.executable, str(rpi.bundle / "validate_tflite.py"), "--dry-run", "--threads", "1",
                             "--out", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert script.returncode == 0, script.stderr

    jetson = deploy(_request(tiny_data, tmp_path, "jetson"))  # shares the trunk: only the export runs
    jmeta = json.loads((jetson.bundle / "metadata.json").read_text())
    assert jmeta["end2end"] and (jetson.bundle / "model_int8.onnx").exists()
    jrows = {r["stage"]: r for r in jetson.rows}
    checks = formats.get("tensorrt").inspect(jetson.bundle / "model_int8.onnx")["tensorrt_checks"]
    assert "map50_95" in jrows["export"] and not checks["unsupported_ops"], \
        "TopK / GatherElements / Mod of the one-to-one head are on TensorRT's list"
    qdq_raw = formats.load_runner(jetson.bundle / "model_int8.onnx", threads=1, imgsz=64).run(x)
    assert qdq_raw.shape == (1, anchors, 6)

    from edgeprune.formats.coreml.export import inspect_spec  # iOS: the head's top-k and row selection convert

    package = formats.get("coreml").export(tuned, tmp_path / "model_int8.mlpackage", 64, "int8")
    ops = inspect_spec(package)["ops"]
    assert ops.get("topk", 0) >= 2 and ops.get("gather_nd", 0) >= 1, ops

    from test_deploy_e2e import _emulated_outputs_are_bit_exact

    _emulated_outputs_are_bit_exact(rpi.bundle, tiny_data, tmp_path)
