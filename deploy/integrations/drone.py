"""Drone integration: detect on the newest frame of a camera, stream or video file; publish over UDP and MAVLink.

    python3 drone.py --bundle dist/jetson --source rtsp://192.168.1.10:8554/cam --udp 192.168.1.2:5600 \\
        --mavlink udpout:127.0.0.1:14550 --heartbeat 5 --stats-out flight.json

A capture thread reads continuously into a one-slot buffer and inference always takes the newest
frame, so latency stays bounded when inference is slower than the camera; frames overwritten before
inference are counted as dropped. Each processed frame is one UDP datagram of JSON:
    {"frame", "timestamp" (capture, Unix s), "latency_ms" (capture to detections), "dropped" (so far),
     "size": [w, h], "detections": [{"x1", "y1", "x2", "y2" (pixels), "score", "class_id", "class_name"}]}
With --mavlink (needs pymavlink) each frame also sends NAMED_VALUE_INT "det_count" and, for the best
MAVLINK_MAX_DETECTIONS detections, DEBUG_VECT with name = class name, x, y = box centre / image size
(0..1), z = score.

Needs numpy, OpenCV and the bundle's runtime. Exit codes: 0 done, 1 source unavailable after its
reconnect attempts, 2 usage or environment error, 3 model failed its sha256 check.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streaming as st  # noqa: E402

MAVLINK_MAX_DETECTIONS = 10  # a telemetry radio carries a few kB/s: send the best few, not all of them
POLL_S = 0.1  # longest wait for a frame, so heartbeats, --duration and signals are served while a source is down


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_common_arguments(p)
    p.add_argument("--udp", type=st.parse_endpoint, metavar="HOST:PORT", help="send one JSON datagram per frame here")
    p.add_argument("--mavlink", metavar="URL",
                   help="pymavlink connection, e.g. udpout:127.0.0.1:14550 or /dev/ttyAMA0,921600")
    p.add_argument("--max-frames", type=st.positive_int, help="stop after processing this many frames")
    p.add_argument("--duration", type=st.positive_float, help="stop after this many seconds")
    p.add_argument("--heartbeat", type=st.non_negative_float, default=5.0,
                   help="seconds between status lines on stdout; 0 turns them off (default 5)")
    p.add_argument("--realtime", action="store_true",
                   help="pace a video file at its own FPS, so frames drop as they would from a live camera")
    p.add_argument("--loop", action="store_true", help="replay a video file from its start when it ends")
    return p.parse_args(argv)


class MavlinkPublisher:
    """Detections as MAVLink: a count per frame, then the best few as DEBUG_VECT (centre, score)."""

    def __init__(self, url: str, mavutil):
        self.conn = mavutil.mavlink_connection(url, source_system=1,
                                               source_component=mavutil.mavlink.MAV_COMP_ID_ONBOARD_COMPUTER)
        self.start = time.monotonic()

    def send(self, message: dict) -> None:
        width, height = message["size"]
        boot_ms = int((time.monotonic() - self.start) * 1000) & 0xFFFFFFFF
        self.conn.mav.named_value_int_send(boot_ms, b"det_count", len(message["detections"]))
        usec = int(message["timestamp"] * 1e6)
        for d in message["detections"][:MAVLINK_MAX_DETECTIONS]:
            self.conn.mav.debug_vect_send(d["class_name"].encode()[:10], usec, (d["x1"] + d["x2"]) / 2 / width,
                                          (d["y1"] + d["y2"]) / 2 / height, d["score"])

    def close(self) -> None:
        self.conn.close()


def open_mavlink(url: str) -> MavlinkPublisher:
    try:
        from pymavlink import mavutil
    except ImportError:
        raise st.Exit("--mavlink needs pymavlink; install it with: pip install pymavlink", st.EXIT_ERROR) from None
    try:
        return MavlinkPublisher(url, mavutil)
    except (OSError, ValueError) as exc:
        raise st.Exit(f"cannot open MAVLink connection {url!r}: {exc}", st.EXIT_ERROR) from None


def process(detector, frame: st.Frame, dropped: int) -> dict:
    """Detect on one frame; latency runs from capture, so it includes any wait in the buffer."""
    detections = detector(st.to_rgb(frame.image))
    latency_ms = (time.perf_counter() - frame.captured) * 1000
    height, width = frame.image.shape[:2]
    return {"frame": frame.index, "timestamp": round(frame.timestamp, 6), "latency_ms": round(latency_ms, 3),
            "dropped": dropped, "size": [width, height], "detections": [st.detection_dict(d) for d in detections]}


def run(detector, capture: st.LatestFrameCapture, publishers: list, *, max_frames: int | None = None,
        duration: float | None = None, heartbeat: float = 5.0, stop: threading.Event | None = None,
        out=sys.stdout) -> dict:
    """Process newest frames until the source ends, a limit is reached or `stop` is set; closes the capture."""
    stop = stop or threading.Event()
    latency, beat = st.LatencyStats(), st.Heartbeat(heartbeat)
    start = time.perf_counter()
    processed = 0
    try:
        while not (stop.is_set() or capture.done or processed == max_frames
                   or (duration and time.perf_counter() - start >= duration)):
            frame = capture.latest(timeout=POLL_S)
            if frame is not None:
                message = process(detector, frame, capture.dropped)
                for publisher in publishers:
                    publisher.send(message)
                latency.add(message["latency_ms"])
                beat.add(message["latency_ms"])
                processed += 1
            line = beat.line(time.perf_counter(), {"processed": processed, **capture.stats()})
            if line:
                print(line, file=out, flush=True)
    finally:
        capture.close()
    elapsed = time.perf_counter() - start
    return {"source": str(capture.source), "model": detector.meta["model"], "runtime": detector.runtime,
            "frames_processed": processed, **capture.stats(), "latency_ms": latency.summary(),
            "fps": round(processed / elapsed, 2) if elapsed > 0 else None, "elapsed_s": round(elapsed, 3),
            "error": capture.error}


def report(summary: dict) -> str:
    return st.done_line(summary, f"{summary['frames_processed']} frames processed, {summary['frames_dropped']} "
                                 f"dropped, {summary['corrupt_frames']} corrupt, {summary['reconnects']} reconnects")


@st.cli
def main(argv=None) -> int:
    args = parse_args(argv)
    detector = st.open_detectors(args.bundle, args.threads, args.conf)[0]
    udp = st.UdpPublisher(args.udp) if args.udp else None
    publishers = [p for p in (udp, open_mavlink(args.mavlink) if args.mavlink else None) if p is not None]

    def process(capture, stop) -> dict:
        summary = run(detector, capture, publishers, max_frames=args.max_frames, duration=args.duration,
                      heartbeat=args.heartbeat, stop=stop)
        return {**summary, "udp_send_errors": udp.errors if udp else 0}

    return st.serve(args, publishers, process, report, realtime=args.realtime, loop=args.loop)


if __name__ == "__main__":
    sys.exit(main())
