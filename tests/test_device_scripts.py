"""edgeprune/device/: the standalone detector and the on-device validation scripts, run as a device would.

Bundles are built here from a tiny seeded YOLO11n exported to ONNX and TFLite (FP32, 64 px), so
the tests do not depend on a previous `edgeprune deploy`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DEVICE = Path(__file__).resolve().parents[1] / "edgeprune" / "device"
sys.path.insert(0, str(DEVICE))

import edgeprune_detector as ed  # noqa: E402

IMGSZ = 64
NAMES = ("circle", "square", "triangle", "star", "cross", "ring")
RUNTIME_OF = {".tflite": "tflite", ".onnx": "onnxruntime", ".mlmodel": "coreml"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_bundle(folder: Path, model: Path, runtime: str | None = None, budget_ms: float = 1000.0) -> Path:
    """A dist/<target>/ folder in the format `edgeprune deploy` writes, around one model file."""
    folder.mkdir(parents=True)
    (folder / model.name).write_bytes(Path(model).read_bytes())
    meta = {
        "format_version": 1, "target": "test", "runtime": runtime or RUNTIME_OF[model.suffix], "precision": "fp32",
        "model": model.name, "names": {str(i): n for i, n in enumerate(NAMES)}, "imgsz": IMGSZ, "end2end": False,
        "boxes_normalized": True,
        "input": {"name": "images", "shape": [1, 3, IMGSZ, IMGSZ], "layout": "NCHW", "dtype": "float32",
                  "color": "RGB", "scale": "pixel / 255 (0..1)",
                  "letterbox": {"pad_value": 114, "centered": True, "keep_aspect": True}},
        "output": {"shape": [1, 4 + len(NAMES), "anchors"], "layout": "xywh / imgsz, sigmoid scores",
                   "nms": {"iou": 0.7, "conf": 0.25, "class_aware": True, "max_det": 300}},
        "latency_budget": {"ms": budget_ms, "percentile": 90},
        "files": {model.name: _sha256(model)},
    }
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2))
    return folder


def _informative(model):
    """Make a random-init model's ranking meaningful, so runtimes are compared on more than float noise.

    At random init activations vanish through the depth and every anchor gets the same score and a
    huge box. Batch statistics from random images rescale the activations, a small seeded class conv
    spreads the scores, and DFL biases favouring short distances give boxes of about one stride.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics exactly
    generator = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, IMGSZ, IMGSZ, generator=generator))
        head = model.model[-1]
        for branch in (*head.cv2, *head.cv3):
            branch[-1].weight.copy_(torch.randn(branch[-1].weight.shape, generator=generator) * 1e-3)
            branch[-1].bias.zero_()
        for branch in head.cv2:
            branch[-1].bias.copy_(-torch.arange(head.reg_max, dtype=torch.float32).repeat(4))
    return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The same seeded model as FP32 ONNX and FP32 TFLite (the TFLite conversion takes ~40 s, so once)."""
    import torch

    import edgeprune.env  # noqa: F401  (offline Ultralytics settings)
    from edgeprune import formats
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = _informative(DetectionModel("yolo11n.yaml", nc=len(NAMES), verbose=False))
    root = tmp_path_factory.mktemp("device-models")
    return {"onnx": formats.get("onnx").export(model, root / "model_fp32.onnx", imgsz=IMGSZ, precision="fp32"),
            "tflite": formats.get("tflite").export(model, root / "model_fp32.tflite", IMGSZ, "fp32")}


def run_script(script: str, bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEVICE / script), "--bundle", str(bundle), "--threads", "1", *args],
                          capture_output=True, text=True, timeout=120)


def _image(width: int, height: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- validation scripts ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize(("script", "kind", "runtime"), [("validate_tflite.py", "tflite", "litert"),
                                                         ("validate_onnx.py", "onnx", "onnxruntime (CPU")])
def test_dry_run_writes_report(script, kind, runtime, models, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", models[kind])
    out = tmp_path / "results.json"
    result = run_script(script, bundle, "--dry-run", "--runs", "3", "--warmup", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().count("\n") == 0 and result.stdout.startswith("DRY-RUN PASS")
    report = json.loads(out.read_text())
    assert report["runtime"].startswith(runtime) and report["target"] == "test"
    assert report["model"] == models[kind].name and report["model_sha256"] == _sha256(models[kind])
    assert report["runs"] == 3 and report["threads"] == 1 and report["dry_run"] is True and report["timestamp"]
    assert {"platform", "machine", "python"} <= set(report["device"])
    for stage in ("preprocess", "infer", "postprocess", "end_to_end"):
        stats = report["latency_ms"][stage]
        assert stats["runs"] == 3 and 0 < stats["p50"] <= stats["p90"] <= stats["p99"] and stats["fps"] > 0
    assert report["latency_ms"]["infer"]["mean"] < report["latency_ms"]["end_to_end"]["mean"]
    budget = report["budget"]
    assert budget["ms"] == 1000.0 and budget["percentile"] == 90 and budget["pass"] is True
    assert budget["measured_ms"] >= report["latency_ms"]["end_to_end"]["p50"]
    assert not list(tmp_path.glob(".results.json.*")), "no temp file left behind"


@pytest.mark.slow
def test_budget_decides_exit_code(models, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", models["onnx"])
    out = tmp_path / "over.json"
    over = run_script("validate_onnx.py", bundle, "--runs", "3", "--warmup", "1", "--budget-ms", "0.001",
                      "--percentile", "50", "--out", str(out))
    assert over.returncode == 1, over.stderr
    assert over.stdout.startswith("FAIL")
    budget = json.loads(out.read_text())["budget"]
    assert (budget["ms"], budget["percentile"], budget["on"], budget["pass"]) == (0.001, 50, "end_to_end", False)
    within = run_script("validate_onnx.py", bundle, "--runs", "3", "--warmup", "1", "--out", str(tmp_path / "ok.json"))
    assert within.returncode == 0 and within.stdout.startswith("PASS")
    dry = run_script("validate_onnx.py", bundle, "--dry-run", "--budget-ms", "0.001", "--out", str(out))
    assert dry.returncode == 0 and json.loads(out.read_text())["budget"]["pass"] is False


@pytest.mark.slow
@pytest.mark.parametrize(("script", "kind"), [("validate_tflite.py", "tflite"), ("validate_onnx.py", "onnx"),
                                              ("validate_tensorrt.py", "onnx")])
def test_tampered_model_is_refused(script, kind, models, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", models[kind])
    model = bundle / models[kind].name
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    out = tmp_path / "results.json"
    result = run_script(script, bundle, "--dry-run", "--runs", "3", "--out", str(out))
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "integrity" in result.stderr and model.name in result.stderr
    assert result.stdout == "" and not out.exists(), "nothing timed, no trtexec hint, no report"


@pytest.mark.slow
def test_wrong_model_kind_is_a_usage_error(models, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", models["tflite"])
    result = run_script("validate_onnx.py", bundle, "--dry-run")
    assert result.returncode == 2 and "needs a .onnx model" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tests the host fallback")
def test_tensorrt_script_falls_back_to_onnxruntime(models, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", models["onnx"], runtime="tensorrt")
    out = tmp_path / "results.json"
    result = run_script("validate_tensorrt.py", bundle, "--dry-run", "--runs", "3", "--percentile", "99",
                        "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"trtexec --onnx={bundle / 'model_fp32.onnx'} --saveEngine={bundle / 'model.engine'}" in result.stdout
    assert "--iterations=3 --avgRuns=3 --percentile=99" in result.stdout
    assert json.loads(out.read_text())["runtime"] == "onnxruntime (tensorrt unavailable)"
    strict = run_script("validate_tensorrt.py", bundle, "--dry-run", "--no-fallback-onnxruntime")
    assert strict.returncode == 2 and "tensorrt is not installed" in strict.stderr


def test_coreml_arguments_and_integrity(tmp_path):
    source = tmp_path / "model.mlmodel"
    source.write_bytes(b"not really a Core ML model, only its bytes are checked off macOS")
    bundle = make_bundle(tmp_path / "bundle", source)
    dry = run_script("validate_coreml.py", bundle, "--dry-run", "--compute-units", "CPU_AND_NE")
    if platform.system() != "Darwin":
        assert dry.returncode == 0, dry.stderr
        assert "Xcode" in dry.stdout and "model.mlmodel" in dry.stdout and "p90 <= 1000.0 ms" in dry.stdout
        real = run_script("validate_coreml.py", bundle)
        assert real.returncode == 2 and "only on macOS" in real.stderr
    assert run_script("validate_coreml.py", bundle, "--compute-units", "GPU_ONLY").returncode == 2
    assert run_script("validate_coreml.py", bundle, "--runs", "0").returncode == 2
    (bundle / "model.mlmodel").write_bytes(b"tampered")
    tampered = run_script("validate_coreml.py", bundle, "--dry-run")
    assert tampered.returncode == 3 and "expected sha256" in tampered.stderr and tampered.stdout == ""


def test_device_modules_need_only_numpy():
    code = (f"import sys; sys.path.insert(0, {str(DEVICE)!r}); import validation_common, edgeprune_detector; "
            "heavy = {'torch', 'edgeprune', 'ultralytics', 'onnxruntime', 'ai_edge_litert', 'cv2', 'PIL'}; "
            "print(sorted(heavy & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


# --- the detector ---------------------------------------------------------------------------

@pytest.mark.slow
def test_tflite_and_onnx_give_the_same_detections(models, tmp_path):
    image = _image(IMGSZ, IMGSZ)  # no resize, so the scores spread widely
    found = {}
    for kind in ("tflite", "onnx"):
        detector = ed.Detector.from_bundle(make_bundle(tmp_path / kind, models[kind]), threads=1, conf=1e-3)
        found[kind] = sorted(detector(image), key=lambda d: -d.score)[:20]
    assert len(found["onnx"]) == 20
    for a, b in zip(found["tflite"], found["onnx"]):
        assert a.class_id == b.class_id and a.class_name == b.class_name == NAMES[a.class_id]
        assert abs(a.score - b.score) < 1e-3
        assert np.abs(np.subtract((a.x1, a.y1, a.x2, a.y2), (b.x1, b.y1, b.x2, b.y2))).max() <= 1.0


@pytest.mark.slow
def test_detector_boxes_are_in_original_image_pixels(models, tmp_path):
    detector = ed.Detector.from_bundle(make_bundle(tmp_path / "b", models["onnx"]), threads=1, conf=1e-3)
    image = _image(100, 60)
    x, box = detector.preprocess(image)
    assert x.shape == (1, 3, IMGSZ, IMGSZ) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert box == ed.Letterbox(scale=0.64, pad_x=0, pad_y=13)
    assert np.all(x[0, :, :13] == np.float32(114 / 255)) and np.all(x[0, :, 13 + 38 :] == np.float32(114 / 255))
    detections = detector(image)
    assert detections and len(detections) <= detector.max_det
    for d in detections:
        assert 0 <= d.x1 <= d.x2 <= 100 and 0 <= d.y1 <= d.y2 <= 60


def test_postprocess_maps_a_known_box_back():
    """A box at (10, 20)-(50, 40) in a 100x60 image sits at scale 0.64, shifted down 13 px, on the 64 px input."""
    meta = {"imgsz": IMGSZ, "names": {str(i): n for i, n in enumerate(NAMES)},
            "output": {"nms": {"iou": 0.7, "conf": 0.25, "max_det": 300}}}
    backend = type("Fake", (), {"input_shape": (1, 3, IMGSZ, IMGSZ)})()
    detector = ed.Detector(backend, meta)
    raw = np.zeros((1, 4 + len(NAMES), 3), np.float32)
    x1, y1, x2, y2 = 10 * 0.64, 20 * 0.64 + 13, 50 * 0.64, 40 * 0.64 + 13
    raw[0, :4, 0] = np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]) / IMGSZ
    raw[0, 4 + 2, 0] = 0.9  # triangle
    raw[0, 4 + 2, 1] = 0.2  # below conf
    (d,) = detector.postprocess(raw, ed.Letterbox(0.64, 0, 13), (100, 60))
    assert (d.class_id, d.class_name) == (2, "triangle") and d.score == pytest.approx(0.9)
    assert (d.x1, d.y1, d.x2, d.y2) == pytest.approx((10, 20, 50, 40), abs=1e-4)


def test_nms_is_class_aware():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [30, 30, 40, 40]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    assert ed.nms(boxes, scores, classes, iou=0.5, max_det=300).tolist() == [0, 2, 3]
    assert ed.nms(boxes, scores, classes, iou=0.5, max_det=2).tolist() == [0, 2]


def test_numpy_resize_matches_pillow_when_enlarging():
    image = _image(20, 12)
    pillow = ed.resize_bilinear(image, 50, 30)
    assert np.abs(pillow.astype(int) - ed.resize_bilinear_numpy(image, 50, 30)).max() <= 1


def test_postprocess_end_to_end_output():
    """(1, k, 6) heads: boxes already xyxy / imgsz, no NMS, only the score filter and max_det."""
    meta = {"imgsz": IMGSZ, "end2end": True, "names": {"0": "circle", "1": "square"}}
    detector = ed.Detector(type("Fake", (), {"input_shape": (1, 3, IMGSZ, IMGSZ)})(), meta, conf=0.5, max_det=2)
    raw = np.array([[[0.1, 0.1, 0.5, 0.5, 0.6, 1], [0.1, 0.1, 0.5, 0.5, 0.9, 1], [0, 0, 1, 1, 0.4, 0],
                     [0.2, 0.2, 0.3, 0.3, 0.7, 0]]], np.float32)
    found = detector.postprocess(raw, ed.Letterbox(1.0, 0, 0), (IMGSZ, IMGSZ))
    assert [(d.class_name, round(d.score, 3)) for d in found] == [("square", 0.9), ("circle", 0.7)]
    assert (found[0].x1, found[0].x2) == pytest.approx((6.4, 32.0))


def test_tflite_integer_io_uses_tensor_quantization():
    """int8 input/output tensors are fed and read through their own (scale, zero_point)."""
    class Interpreter:
        def set_tensor(self, index, value):
            self.fed = value

        def invoke(self):
            pass

        def get_tensor(self, index):
            return np.array([[-128, 0, 127]], np.int8)

    backend = object.__new__(ed.TFLiteBackend)
    backend.interpreter = Interpreter()
    backend.inp = {"index": 0, "dtype": np.int8, "quantization": (1 / 255, -128)}
    backend.out = {"index": 1, "dtype": np.int8, "quantization": (0.5, -128)}
    y = backend.run(np.array([[0.0, 0.4, 1.0]], np.float32))
    assert backend.interpreter.fed.dtype == np.int8 and backend.interpreter.fed.tolist() == [[-128, -26, 127]]
    assert y.dtype == np.float32 and y.tolist() == [[0.0, 64.0, 127.5]]


@pytest.mark.slow
def test_host_evaluator_and_device_detector_agree(models, tmp_path):
    """edgeprune.detector (host import) and the evaluator's letterbox/decode/NMS give exactly the same boxes:
    one implementation (the device module) serves both."""
    from PIL import Image

    from edgeprune import formats
    from edgeprune.data.letterbox import letterbox, to_input
    from edgeprune.detector import Detector
    from edgeprune.evaluation.detection import decode

    image = _image(96, 80, seed=5)
    detector = Detector.from_bundle(make_bundle(tmp_path / "h", models["onnx"]), threads=1, conf=0.01, iou=0.7)
    device = sorted(detector(image), key=lambda d: -d.score)[:10]
    boxed, box = letterbox(Image.fromarray(image), IMGSZ)
    host = decode(formats.load_runner(models["onnx"], threads=1).run(to_input([boxed])), conf=0.01, iou=0.7)[0]
    host[:, :4] = box.to_original(host[:, :4], 96, 80)
    host = host[np.argsort(-host[:, 4])][:10]
    assert len(device) == len(host) > 0
    for d, h in zip(device, host):
        assert (d.x1, d.y1, d.x2, d.y2, d.score, d.class_id) == (*map(float, h[:5]), int(h[5]))


def test_every_listed_file_is_checked_not_only_the_model(tmp_path):
    """metadata.json lists every bundle file; a changed or missing script/report fails like a changed model."""
    source = tmp_path / "model.mlmodel"
    source.write_bytes(b"only the bytes are checked off macOS")
    bundle = make_bundle(tmp_path / "bundle", source)
    (bundle / "report.md").write_text("# report\n")
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["files"]["report.md"] = _sha256(bundle / "report.md")
    (bundle / "metadata.json").write_text(json.dumps(meta))
    assert run_script("validate_coreml.py", bundle, "--dry-run").returncode == 0
    (bundle / "report.md").write_text("# edited\n")
    changed = run_script("validate_coreml.py", bundle, "--dry-run")
    assert changed.returncode == 3 and "report.md: expected sha256" in changed.stderr and changed.stdout == ""
    (bundle / "report.md").unlink()
    missing = run_script("validate_coreml.py", bundle, "--dry-run")
    assert missing.returncode == 3 and "report.md is missing" in missing.stderr
