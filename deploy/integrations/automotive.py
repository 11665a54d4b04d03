"""Automotive integration: detection at a fixed rate, a deadline per frame, and a watchdog that degrades.

    python3 automotive.py --bundle dist/orin --source /dev/video0 --rate 30 --deadline-ms 25 --log ticks.jsonl

Tick n is scheduled at start + n / rate and runs the detector on the newest camera frame; a result
later than --deadline-ms after the tick's scheduled time misses its deadline. A tick whose start
passed while the previous one still ran is not run late: it is logged as an overrun and counts as a
miss. Instead of falling behind, the watchdog steps down when more than --miss-ratio of the last
--window decided ticks missed: to processing every 2nd, 4th, ... tick (up to --max-skip), then to
each smaller model that metadata.json lists as "fallback_models": [{"model": "...", "imgsz": N}].
It steps back up when at most --recover-ratio of a window missed.

--log gets one JSON line per tick: tick, timestamp, status (processed / skipped / no_frame / overrun),
frame, latency_ms, deadline_met, mode (full / skip / fallback / fallback+skip), skip_every, model,
detections. When rclpy (a sourced ROS 2) is importable, each processed tick is also published as a
std_msgs/String of the same JSON on --ros-topic. A video file is paced at its own FPS, like a camera.

Needs numpy, OpenCV and the bundle's runtime. Exit codes: 0 done, 1 source unavailable after its
reconnect attempts, 2 usage or environment error, 3 a model failed its sha256 check.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streaming as st  # noqa: E402

STATUSES = ("processed", "skipped", "no_frame", "overrun")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_common_arguments(p)
    p.add_argument("--rate", type=st.positive_float, default=30.0, help="ticks per second (default 30)")
    p.add_argument("--deadline-ms", type=st.positive_float, help="per-tick deadline (default 1000 / rate)")
    p.add_argument("--max-ticks", type=st.positive_int, help="stop after this many ticks")
    p.add_argument("--log", type=Path, help="JSON lines, one per tick")
    p.add_argument("--window", type=st.positive_int, default=10,
                   help="decided ticks the watchdog looks back over (default 10)")
    p.add_argument("--miss-ratio", type=st.unit_float, default=0.3,
                   help="step down when more than this share of the window missed (default 0.3)")
    p.add_argument("--recover-ratio", type=st.unit_float, default=0.0,
                   help="step back up when at most this share of the window missed (default 0)")
    p.add_argument("--max-skip", type=st.positive_int, default=8, help="process at least every k-th tick (default 8)")
    p.add_argument("--ros-topic", default="edgeprune/detections",
                   help="ROS 2 topic when rclpy is importable; empty to not publish (default edgeprune/detections)")
    return p.parse_args(argv)


def skip_steps(max_skip: int) -> list[int]:
    """1, 2, 4, ... up to and including max_skip."""
    steps = [1]
    while steps[-1] < max_skip:
        steps.append(min(steps[-1] * 2, max_skip))
    return steps


class Watchdog:
    """Walks a ladder of (model, skip) one step at a time: down on many misses, up when they stay low.

    The window restarts after each step, so every decision rests on ticks run in the current mode.
    """

    def __init__(self, models: int = 1, max_skip: int = 8, window: int = 10, miss_ratio: float = 0.3,
                 recover_ratio: float = 0.0):
        self.ladder = [(model, k) for model in range(models) for k in skip_steps(max_skip)]
        self.level = 0
        self.recent: deque[bool] = deque(maxlen=window)
        self.miss_ratio, self.recover_ratio = miss_ratio, recover_ratio

    @property
    def model(self) -> int:
        return self.ladder[self.level][0]

    @property
    def skip(self) -> int:
        return self.ladder[self.level][1]

    @property
    def mode(self) -> str:
        if self.skip == 1:
            return "fallback" if self.model else "full"
        return "fallback+skip" if self.model else "skip"

    def record(self, deadline_met: bool) -> bool:
        """Add one decided tick; True when the mode changed."""
        self.recent.append(deadline_met)
        if len(self.recent) < self.recent.maxlen:
            return False
        ratio = self.recent.count(False) / len(self.recent)
        step = 1 if ratio > self.miss_ratio else -1 if ratio <= self.recover_ratio else 0
        if step == 0 or not 0 <= self.level + step < len(self.ladder):
            return False
        self.level += step
        self.recent.clear()
        return True


class JsonlLog:
    """One JSON line per tick, flushed per line so a crash or power cut loses at most the last tick."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "w", buffering=1)

    def send(self, record: dict) -> None:
        self.handle.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self.handle.close()


class RosPublisher:
    """Processed ticks as std_msgs/String JSON on a ROS 2 topic."""

    def __init__(self, rclpy, string_type, topic: str):
        self.rclpy, self.String = rclpy, string_type
        rclpy.init()
        self.node = rclpy.create_node("edgeprune_automotive")
        self.publisher = self.node.create_publisher(string_type, topic, 10)

    def send(self, record: dict) -> None:
        if record["status"] == "processed":
            message = self.String()
            message.data = json.dumps(record, separators=(",", ":"))
            self.publisher.publish(message)

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.shutdown()


def open_ros(topic: str) -> RosPublisher | None:
    """A publisher when a topic is set and rclpy is importable: ROS 2 is optional on the device."""
    if not topic:
        return None
    try:
        import rclpy
        from std_msgs.msg import String
    except ImportError:
        return None
    try:
        return RosPublisher(rclpy, String, topic)
    except Exception as exc:  # rclpy's own errors (e.g. RCLError from a broken ROS environment)
        raise st.Exit(f"cannot publish on ROS 2 topic {topic!r}: {exc}", st.EXIT_ERROR) from None


def tick_record(tick: int, wall: float, watchdog: Watchdog, detectors: list) -> dict:
    return {"tick": tick, "timestamp": round(wall, 6), "status": None, "frame": None, "latency_ms": None,
            "deadline_met": None, "mode": watchdog.mode, "skip_every": watchdog.skip,
            "model": detectors[watchdog.model].meta["model"], "detections": []}


def run_tick(record: dict, scheduled: float, deadline_s: float, detectors: list, capture, watchdog: Watchdog) -> dict:
    """Process the newest frame on this tick unless the watchdog skips it or no new frame came."""
    if record["tick"] % watchdog.skip:
        return {**record, "status": "skipped"}
    frame = capture.latest()
    if frame is None:
        return {**record, "status": "no_frame"}
    detections = detectors[watchdog.model](st.to_rgb(frame.image))
    latency = time.perf_counter() - scheduled
    return {**record, "status": "processed", "frame": frame.index, "latency_ms": round(latency * 1000, 3),
            "deadline_met": latency <= deadline_s, "detections": [st.detection_dict(d) for d in detections]}


def run(detectors: list, capture: st.LatestFrameCapture, sinks: list, *, rate: float, deadline_ms: float,
        watchdog: Watchdog, max_ticks: int | None = None, stop: threading.Event | None = None) -> dict:
    """The fixed-rate loop until the source ends, max_ticks or `stop`; closes the capture, returns the summary."""
    stop = stop or threading.Event()
    period, deadline_s = 1.0 / rate, deadline_ms / 1000
    counts, latency, changes = Counter(), st.LatencyStats(), []
    start, wall0, tick = time.perf_counter(), time.time(), 0
    end = max_ticks or sys.maxsize

    def emit(record: dict) -> None:
        counts[record["status"]] += 1
        if record["status"] == "processed":
            latency.add(record["latency_ms"])
        for sink in sinks:
            sink.send(record)
        if record["deadline_met"] is not None:
            counts["missed"] += not record["deadline_met"]
            if watchdog.record(record["deadline_met"]):
                changes.append(mode_change(record["tick"], watchdog, detectors))

    try:
        while not (stop.is_set() or capture.done or tick >= end):
            scheduled = start + tick * period
            if stop.wait(max(0.0, scheduled - time.perf_counter())):
                break
            emit(run_tick(tick_record(tick, wall0 + tick * period, watchdog, detectors), scheduled, deadline_s,
                          detectors, capture, watchdog))
            next_tick = min(end, max(tick + 1, math.ceil((time.perf_counter() - start) / period)))
            for late in range(tick + 1, next_tick):
                emit({**tick_record(late, wall0 + late * period, watchdog, detectors), "status": "overrun",
                      "deadline_met": False})
            tick = next_tick
    finally:
        capture.close()
    return summarize(counts, latency, changes, time.perf_counter() - start, rate, deadline_ms, watchdog, detectors,
                     capture)


def mode_change(tick: int, watchdog: Watchdog, detectors: list) -> dict:
    change = {"tick": tick, "mode": watchdog.mode, "skip_every": watchdog.skip,
              "model": detectors[watchdog.model].meta["model"]}
    st.warn(f"watchdog: tick {tick} -> {change['mode']}, every {change['skip_every']} tick(s), {change['model']}")
    return change


def summarize(counts: Counter, latency: st.LatencyStats, changes: list, elapsed: float, rate: float,
              deadline_ms: float, watchdog: Watchdog, detectors: list, capture) -> dict:
    decided = counts["processed"] + counts["overrun"]
    return {"source": str(capture.source), "rate_hz": rate, "deadline_ms": deadline_ms,
            "ticks": sum(counts[s] for s in STATUSES), **{s: counts[s] for s in STATUSES},
            "deadline_misses": counts["missed"],
            "miss_ratio": round(counts["missed"] / decided, 4) if decided else None,
            "latency_ms": latency.summary(), "fps": round(counts["processed"] / elapsed, 2) if elapsed > 0 else None,
            "elapsed_s": round(elapsed, 3), "mode": watchdog.mode, "skip_every": watchdog.skip,
            "model": detectors[watchdog.model].meta["model"], "mode_changes": changes, **capture.stats(),
            "error": capture.error}


def report(summary: dict) -> str:
    return st.done_line(summary, f"{summary['ticks']} ticks, {summary['processed']} processed, {summary['skipped']} "
                                 f"skipped, {summary['deadline_misses']} deadline misses, final mode {summary['mode']}")


@st.cli
def main(argv=None) -> int:
    args = parse_args(argv)
    detectors = st.open_detectors(args.bundle, args.threads, args.conf, fallbacks=True)
    ros = open_ros(args.ros_topic)
    sinks = [sink for sink in (JsonlLog(args.log) if args.log else None, ros) if sink is not None]
    watchdog = Watchdog(len(detectors), args.max_skip, args.window, args.miss_ratio, args.recover_ratio)

    def process(capture, stop) -> dict:
        summary = run(detectors, capture, sinks, rate=args.rate, deadline_ms=args.deadline_ms or 1000 / args.rate,
                      watchdog=watchdog, max_ticks=args.max_ticks, stop=stop)
        return {**summary, "ros_topic": args.ros_topic if ros else None}

    return st.serve(args, sinks, process, report, realtime=True)


if __name__ == "__main__":
    sys.exit(main())
