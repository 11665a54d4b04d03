"""deploy/integrations/: the drone and automotive loops, run as a device would, on a short synthetic video.

The bundle holds a tiny seeded YOLO11n exported to FP32 ONNX at 64 px (a few seconds, once per
module); the video is 40 MJPG frames of 128x96 at 20 fps with frame 10's JPEG data destroyed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
INTEGRATIONS = ROOT / "deploy" / "integrations"
DEVICE = ROOT / "edgeprune" / "device"
sys.path.insert(0, str(INTEGRATIONS))

import automotive  # noqa: E402
import bench_stream  # noqa: E402
import drone  # noqa: E402
import streaming as st  # noqa: E402

IMGSZ = 64
NAMES = ("circle", "square", "triangle", "star", "cross", "ring")
FRAMES, FPS, WIDTH, HEIGHT, CORRUPT = 40, 20, 128, 96, 10
MESSAGE_KEYS = {"frame", "timestamp", "latency_ms", "dropped", "size", "detections"}
DETECTION_KEYS = {"x1", "y1", "x2", "y2", "score", "class_id", "class_name"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_bundle(folder: Path, model: Path, fallback: Path | None = None) -> Path:
    """A dist/<target>/ folder as `edgeprune deploy` writes it: model(s), metadata.json, the detector module."""
    folder.mkdir(parents=True)
    models = {"model.onnx": model, **({"model_small.onnx": fallback} if fallback else {})}
    for name, source in models.items():
        shutil.copyfile(source, folder / name)
    shutil.copyfile(DEVICE / "edgeprune_detector.py", folder / "edgeprune_detector.py")
    meta = {"format_version": 1, "target": "test", "runtime": "onnxruntime", "precision": "fp32",
            "model": "model.onnx", "names": {str(i): n for i, n in enumerate(NAMES)}, "imgsz": IMGSZ,
            "end2end": False, "boxes_normalized": True,
            "input": {"shape": [1, 3, IMGSZ, IMGSZ], "layout": "NCHW", "letterbox": {"pad_value": 114}},
            "output": {"nms": {"iou": 0.7, "conf": 0.25, "max_det": 300}},
            "files": {name: _sha256(folder / name) for name in models}}
    if fallback:
        meta["fallback_models"] = [{"model": "model_small.onnx", "imgsz": IMGSZ}]
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2))
    return folder


def fake_bundle(tmp_path: Path) -> Path:
    """A bundle whose model is a few bytes: enough for everything that happens before the runtime loads it."""
    model = tmp_path / "fake.onnx"
    model.write_bytes(b"only the sha256 of these bytes is checked")
    return make_bundle(tmp_path / "bundle", model)


def write_video(path: Path) -> Path:
    """Moving squares on noise, MJPG; frame CORRUPT's JPEG is zeroed so OpenCV cannot decode it."""
    import cv2

    rng = np.random.default_rng(1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    for i in range(FRAMES):
        image = rng.integers(0, 60, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        image[20:50, 2 * i : 2 * i + 30] = (40, 200, 240)
        image[60:80, WIDTH - 2 * i - 20 : WIDTH - 2 * i] = (220, 80, 30)
        writer.write(image)
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == FRAMES, "one JPEG per frame"
    end = data.index(b"\xff\xd9", starts[CORRUPT]) + 2  # its end-of-image marker
    data[starts[CORRUPT] : end] = bytes(end - starts[CORRUPT])
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    import torch

    import edgeprune.env  # noqa: F401  (offline Ultralytics settings)
    from edgeprune import formats
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    net = DetectionModel("yolo11n.yaml", nc=len(NAMES), verbose=False).eval()
    root = tmp_path_factory.mktemp("integration-model")
    return formats.get("onnx").export(net, root / "model.onnx", imgsz=IMGSZ, precision="fp32")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("integration-video") / "clip.avi")


def run_script(script: str, bundle: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(INTEGRATIONS / script), "--bundle", str(bundle), "--threads", "1",
                           *args], capture_output=True, text=True, timeout=60, env=env)


# --- building blocks, in-process ------------------------------------------------------------

def test_frame_validator():
    good = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    assert st.frame_problem(good) is None and st.frame_problem(good, good.shape) is None
    assert st.frame_problem(None) == "no image"
    assert st.frame_problem(np.zeros((0, 0, 3), np.uint8)) == "empty image"
    assert "3-channel" in st.frame_problem(np.zeros((HEIGHT, WIDTH), np.uint8))
    assert "3-channel" in st.frame_problem(good.astype(np.float32))
    small = np.zeros((48, 64, 3), np.uint8)
    assert st.frame_problem(small, good.shape) == "size 64x48 differs from the stream's 128x96"


def test_backoff_watchdog_and_endpoints():
    backoff = st.Backoff(initial=0.1, maximum=0.5, attempts=3)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]
    assert not backoff.exhausted(3) and backoff.exhausted(4) and not st.Backoff(attempts=0).exhausted(10**6)
    assert automotive.skip_steps(1) == [1] and automotive.skip_steps(6) == [1, 2, 4, 6]

    dog = automotive.Watchdog(models=2, max_skip=2, window=3, miss_ratio=0.3, recover_ratio=0.0)
    modes = []
    for met in [False] * 12 + [True] * 6:
        if dog.record(met):
            modes.append((dog.mode, dog.skip, dog.model))
    assert modes == [("skip", 2, 0), ("fallback", 1, 1), ("fallback+skip", 2, 1), ("fallback", 1, 1),
                     ("skip", 2, 0)], "down one step per full window of misses, at the bottom it stays; up on hits"

    assert st.parse_endpoint("127.0.0.1:5600") == ("127.0.0.1", 5600) and st.parse_endpoint("[::1]:9") == ("::1", 9)
    for bad in ("5600", "host:", "host:0", "host:x"):
        with pytest.raises(Exception, match="HOST:PORT"):
            st.parse_endpoint(bad)


def test_datagram_stays_under_udp_limit():
    detection = {"x1": 1.0, "y1": 2.0, "x2": 3.0, "y2": 4.0, "score": 0.5, "class_id": 1, "class_name": "x" * 40}
    message = {"frame": 1, "detections": [{**detection, "score": i} for i in range(2000)]}
    payload = st.encode_datagram(message)
    decoded = json.loads(payload)
    assert len(payload) <= st.UDP_MAX_PAYLOAD and decoded["truncated"] is True
    assert decoded["detections"] == message["detections"][: len(decoded["detections"])], "the best ones are kept"
    assert "truncated" not in json.loads(st.encode_datagram({"frame": 1, "detections": [detection]}))


class ScriptedCapture:
    """Stands in for cv2.VideoCapture: plays a list of reads; "fail" is a failed read, "block" a stalled one."""

    def __init__(self, reads: list, unblock: threading.Event):
        self.reads, self.unblock = list(reads), unblock

    def read(self):
        item = self.reads.pop(0) if self.reads else "fail"
        if isinstance(item, str) and item == "block":
            self.unblock.wait(10)
        return (False, None) if isinstance(item, str) else (True, item)

    def get(self, prop):
        return 0.0

    def release(self):
        pass


def test_capture_reconnects_after_drop_and_stall_then_gives_up(monkeypatch, capsys):
    frame, small = np.zeros((HEIGHT, WIDTH, 3), np.uint8), np.zeros((48, 64, 3), np.uint8)
    unblock = threading.Event()
    opened = iter([ScriptedCapture([frame, frame, small, frame, "fail"], unblock),  # drops after 3 good + 1 bad
                   ScriptedCapture([frame, "block"], unblock)])  # stalls after 1 good, then nothing opens
    monkeypatch.setattr(st, "open_capture", lambda source, timeout: next(opened, None))
    capture = st.LatestFrameCapture("rtsp://camera/test", stall_timeout=0.3,
                                    backoff=st.Backoff(initial=0.01, maximum=0.02, attempts=2)).start()
    start, taken = time.perf_counter(), []
    while not capture.done:
        frame_taken = capture.latest(timeout=0.05)
        taken += [frame_taken] if frame_taken else []
    capture.close()
    unblock.set()
    stats, err = capture.stats(), capsys.readouterr().err
    assert time.perf_counter() - start < 3
    assert stats == {"frames_read": 5, "frames_dropped": 4 - len(taken), "corrupt_frames": 1, "reconnects": 3}
    assert [f.index for f in taken] == sorted(f.index for f in taken) and 2 not in [f.index for f in taken]
    assert "read failed" in err and "stalled (no frame for 0.3 s)" in err and "size 64x48 differs" in err
    assert capture.error == ("source 'rtsp://camera/test' unavailable after 2 reconnect attempts (last: cannot open)")


def test_optional_publishers(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymavlink", None)  # makes the import fail, as on a device without it
    monkeypatch.setitem(sys.modules, "rclpy", None)
    with pytest.raises(st.Exit, match="pip install pymavlink") as refused:
        drone.open_mavlink("udpout:127.0.0.1:14550")
    assert refused.value.code == st.EXIT_ERROR
    assert automotive.open_ros("edgeprune/detections") is None, "no ROS 2: the log still works"

    calls = []
    mav = SimpleNamespace(named_value_int_send=lambda *a: calls.append(("count", a)),
                          debug_vect_send=lambda *a: calls.append(("vect", a)))
    mavutil = SimpleNamespace(mavlink_connection=lambda url, **kw: SimpleNamespace(mav=mav),
                              mavlink=SimpleNamespace(MAV_COMP_ID_ONBOARD_COMPUTER=191))
    detection = {"x1": 10.0, "y1": 10.0, "x2": 30.0, "y2": 20.0, "score": 0.9, "class_name": "traffic_light"}
    drone.MavlinkPublisher("udpout:127.0.0.1:14550", mavutil).send(
        {"timestamp": 1.5, "size": [100, 50], "detections": [detection] * 12})
    assert calls[0][0] == "count" and calls[0][1][1:] == (b"det_count", 12)
    assert calls[1:] == [("vect", (b"traffic_li", 1_500_000, 0.2, 0.3, 0.9))] * drone.MAVLINK_MAX_DETECTIONS


def test_integrations_need_no_torch_or_edgeprune():
    code = (f"import sys; sys.path.insert(0, {str(INTEGRATIONS)!r}); import drone, automotive, bench_stream, "
            "streaming; streaming.import_detector_module(streaming.DEVICE_DIR); "
            "print(sorted({'torch', 'edgeprune', 'ultralytics'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("script", ["drone.py", "automotive.py"])
def test_tampered_bundle_is_refused(script, tmp_path):
    bundle = fake_bundle(tmp_path)
    (bundle / "model.onnx").write_bytes(b"swapped")
    result = run_script(script, bundle, "--source", str(tmp_path / "none.avi"))
    assert result.returncode == st.EXIT_TAMPERED
    assert result.stderr.count("\n") == 1 and "integrity" in result.stderr and result.stdout == ""


def test_missing_runtime_is_refused(tmp_path):
    shim = tmp_path / "shim" / "onnxruntime"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('not on this device')\n")
    env = {**os.environ, "PYTHONPATH": str(shim.parent)}
    result = run_script("drone.py", fake_bundle(tmp_path), "--source", "0", env=env)
    assert result.returncode == st.EXIT_ERROR
    assert result.stderr.count("\n") == 1 and "pip install onnxruntime" in result.stderr


# --- the scripts on a real model ------------------------------------------------------------

def _receive_while(proc: subprocess.Popen, sock: socket.socket) -> list[dict]:
    """Read datagrams while the process runs (a loopback buffer would overflow otherwise), then drain."""
    sock.settimeout(0.2)
    messages = []
    while True:
        try:
            messages.append(json.loads(sock.recv(65536)))
        except socket.timeout:
            if proc.poll() is not None:
                return messages


@pytest.mark.slow
def test_drone_publishes_newest_frames_over_udp(model, video, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", model)
    stats_path = tmp_path / "stats.json"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        proc = subprocess.Popen([sys.executable, str(INTEGRATIONS / "drone.py"), "--bundle", str(bundle), "--threads",
                                 "1", "--source", str(video), "--realtime", "--conf", "0", "--udp", f"127.0.0.1:{port}",
                                 "--heartbeat", "0.5", "--stats-out", str(stats_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        messages = _receive_while(proc, sock)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stats = json.loads(stats_path.read_text())
    assert (stats["frames_read"], stats["corrupt_frames"], stats["reconnects"], stats["error"]) == (FRAMES, 1, 0, None)
    assert stats["frames_processed"] + stats["frames_dropped"] + stats["corrupt_frames"] == FRAMES
    assert len(messages) == stats["frames_processed"] >= 5 and stats["udp_send_errors"] == 0
    frames = [m["frame"] for m in messages]
    assert frames == sorted(set(frames)) and CORRUPT not in frames
    for m in messages:
        assert set(m) == MESSAGE_KEYS and m["size"] == [WIDTH, HEIGHT] and m["latency_ms"] > 0 and m["detections"]
        for d in m["detections"]:
            assert set(d) == DETECTION_KEYS and d["class_name"] == NAMES[d["class_id"]]
            assert 0 <= d["x1"] <= d["x2"] <= WIDTH and 0 <= d["y1"] <= d["y2"] <= HEIGHT
    latency = stats["latency_ms"]
    assert latency["count"] == len(messages) and 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    assert "heartbeat fps=" in out and out.strip().splitlines()[-1].startswith("done:")
    assert "skipped corrupt frame 10" in err

    fast = run_script("drone.py", bundle, "--source", str(video), "--heartbeat", "0", "--stats-out", str(stats_path))
    assert fast.returncode == 0, fast.stderr
    stats = json.loads(stats_path.read_text())
    assert stats["frames_read"] == FRAMES and stats["frames_dropped"] > 0, "unpaced reading outruns inference"
    assert stats["frames_processed"] + stats["frames_dropped"] + stats["corrupt_frames"] == FRAMES


@pytest.mark.slow
def test_automotive_counts_misses_and_degrades(model, video, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", model, fallback=model)
    log, stats_path = tmp_path / "ticks.jsonl", tmp_path / "stats.json"
    rate, ticks = 25, 40
    result = run_script("automotive.py", bundle, "--source", str(video), "--rate", str(rate), "--deadline-ms", "0.1",
                        "--window", "4", "--max-skip", "2", "--max-ticks", str(ticks), "--log", str(log),
                        "--stats-out", str(stats_path))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    stats = json.loads(stats_path.read_text())
    assert [r["tick"] for r in records] == list(range(ticks)) and stats["ticks"] == ticks
    assert stats["elapsed_s"] < ticks / rate + 2, "the loop kept its rate instead of stalling"
    processed = [r for r in records if r["status"] == "processed"]
    assert processed and all(r["deadline_met"] is False and r["latency_ms"] > 0.1 for r in processed)
    assert stats["deadline_misses"] == stats["processed"] + stats["overrun"] and stats["miss_ratio"] == 1.0
    modes = [r["mode"] for r in records]
    assert modes[0] == "full" and "skip" in modes and modes.index("skip") < modes.index("fallback")
    assert all(r["tick"] % 2 for r in records if r["status"] == "skipped"), "skip 2 drops the odd ticks"
    assert {r["model"] for r in records if r["mode"].startswith("fallback")} == {"model_small.onnx"}
    assert [c["mode"] for c in stats["mode_changes"]][:2] == ["skip", "fallback"]
    assert "watchdog: tick" in result.stderr and result.stdout.startswith("done:")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["drone.py", "automotive.py"])
def test_unavailable_source_backs_off_then_exits(script, model, tmp_path):
    start = time.perf_counter()
    result = run_script(script, make_bundle(tmp_path / "bundle", model), "--source", str(tmp_path / "missing.avi"),
                        "--reconnect-attempts", "3", "--backoff", "0.05", "--backoff-max", "0.2")
    assert time.perf_counter() - start < 20
    assert result.returncode == st.EXIT_SOURCE
    assert re.findall(r"reconnect attempt (\d)/3 in", result.stderr) == ["1", "2", "3"]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: source") and "unavailable after 3 reconnect attempts" in last


@pytest.mark.slow
def test_bench_stream(model, video, tmp_path):
    result = bench_stream.run(make_bundle(tmp_path / "bundle", model), video, seconds=1.0, rate=20)
    for loop in ("drone", "automotive"):
        stats = result[loop]
        assert stats["fps"] > 0 and 0 < stats["latency_ms"]["p50"] <= stats["latency_ms"]["p90"] <= \
            stats["latency_ms"]["p99"]
    assert result["drone"]["frames_processed"] > 0 and result["automotive"]["processed"] > 0
