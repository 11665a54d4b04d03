"""What the drone and automotive integrations share: loading the bundle's detector, a newest-frame
capture that survives drops and stalls, latency statistics and a UDP publisher.

Runs on a device with only numpy, OpenCV and the bundle's runtime: never imports torch or edgeprune.
Exit codes of both integrations: 0 done, 1 the source stayed unavailable after its reconnect
attempts, 2 usage or environment error (e.g. a runtime package is missing), 3 the model failed its
sha256 check (nothing was run).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import itertools
import json
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEVICE_DIR = Path(__file__).resolve().parents[2] / "edgeprune" / "device"  # the source tree's device package
# The device scripts' command-line skeleton (exit codes, checked numbers, one-line errors): from the source tree's
# device package, or from beside this file when the integrations were copied into a bundle.
sys.path.insert(0, str(DEVICE_DIR if (DEVICE_DIR / "device_cli.py").is_file() else Path(__file__).resolve().parent))
from device_cli import (EXIT_ERROR, EXIT_OK, EXIT_TAMPERED, Exit, cli, non_negative_float,  # noqa: E402, F401
                        non_negative_int, positive_float, positive_int, unit_float)

EXIT_SOURCE = 1  # the source stayed unavailable after its reconnect attempts
UDP_MAX_PAYLOAD = 65_000  # under the 65,507-byte limit of one UDP datagram
MAX_FILE_READ_FAILURES = 10  # consecutive unreadable frames inside a video file before it counts as ended
SUMMARY_WINDOW = 10_000  # latencies kept for the final percentiles, so memory stays bounded on long runs
DEFAULT_FILE_FPS = 30.0  # pacing for a file whose container declares no frame rate
URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


@functools.cache
def cv2_module():
    """OpenCV, imported on first use so a missing install is one clear line instead of a traceback."""
    try:
        import cv2
    except ImportError as exc:
        raise Exit(f"OpenCV is not installed ({exc}); install it with: pip install opencv-python-headless",
                   EXIT_ERROR) from None
    return cv2


# --- command line ---------------------------------------------------------------------------

def parse_source(text: str) -> int | str:
    """A camera index ("0") or a path / URL / GStreamer pipeline."""
    return int(text) if text.isdigit() else text


def parse_endpoint(text: str) -> tuple[str, int]:
    """HOST:PORT, an IPv6 host in brackets ([::1]:5600)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder (dist/<target>/) with metadata.json")
    p.add_argument("--source", type=parse_source, default=0,
                   help="camera index, video file, or stream URL (rtsp://, udp://, http://); default camera 0")
    p.add_argument("--threads", type=positive_int, help="CPU threads for the runtime (default: the runtime's own)")
    p.add_argument("--conf", type=unit_float, help="score threshold (default: the bundle's)")
    p.add_argument("--stats-out", type=Path, help="write the final JSON summary here")
    p.add_argument("--stall-timeout", type=positive_float, default=5.0,
                   help="seconds without a new frame before the source counts as dropped (default 5)")
    p.add_argument("--reconnect-attempts", type=non_negative_int, default=10,
                   help="consecutive failed reconnects before giving up with exit code 1; 0 retries forever "
                        "(default 10)")
    p.add_argument("--backoff", type=positive_float, default=0.5,
                   help="first reconnect delay in seconds, doubled after each failed attempt (default 0.5)")
    p.add_argument("--backoff-max", type=positive_float, default=10.0, help="longest reconnect delay (default 10)")


def capture_from_args(args, realtime: bool, loop: bool = False) -> LatestFrameCapture:
    backoff = Backoff(args.backoff, max(args.backoff, args.backoff_max), args.reconnect_attempts)
    return LatestFrameCapture(args.source, realtime=realtime, loop=loop, stall_timeout=args.stall_timeout,
                              backoff=backoff)


def stop_on_signals() -> threading.Event:
    """SIGINT / SIGTERM end the loop cleanly, so the summary is still written when a service is stopped."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def write_json(path: Path, data: dict) -> None:
    """Atomic (the device module's atomic_write), so a reader never sees half a summary."""
    device = sys.modules.get("edgeprune_detector") or import_detector_module(DEVICE_DIR)
    device.atomic_write(Path(path), (json.dumps(data, indent=2) + "\n").encode())


@contextlib.contextmanager
def closing(outputs: list):
    """Close every publisher / sink when the loop ends, however it ends."""
    try:
        yield outputs
    finally:
        for output in outputs:
            output.close()


def serve(args, outputs: list, process, report, **capture_options) -> int:
    """How every integration runs: stop on SIGINT/SIGTERM, start the newest-frame capture, `process(capture, stop)`
    until it returns its summary, close every output, then finish with `report(summary)`."""
    stop = stop_on_signals()
    capture = capture_from_args(args, **capture_options).start()
    with closing(outputs):
        summary = process(capture, stop)
    return finish(args, summary, report(summary))


def done_line(summary: dict, counts: str) -> str:
    """The one line an integration prints when it stops: its own counts, then fps and latency percentiles."""
    p = summary["latency_ms"]
    return f"done: {counts}, {summary['fps']} fps, latency ms p50={p['p50']} p90={p['p90']} p99={p['p99']}"


def finish(args, summary: dict, text: str) -> int:
    """How every integration ends: the stats file, one summary line, and the exit code."""
    if args.stats_out:
        write_json(args.stats_out, summary)
    print(text, flush=True)
    if summary["error"]:
        raise Exit(summary["error"], EXIT_SOURCE)
    return EXIT_OK


# --- the detector ---------------------------------------------------------------------------

def import_detector_module(bundle: Path):
    """edgeprune_detector from the bundle (where deploy copies it), else from the source tree's edgeprune/device."""
    for folder in (Path(bundle), DEVICE_DIR):
        if (folder / "edgeprune_detector.py").is_file():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return importlib.import_module("edgeprune_detector")
    raise Exit(f"edgeprune_detector.py is neither in {bundle} nor in {DEVICE_DIR}; copy the whole bundle", EXIT_ERROR)


def open_detectors(bundle: Path, threads: int | None = None, conf: float | None = None,
                   fallbacks: bool = False) -> list:
    """The bundle's detector, then one per metadata "fallback_models" entry when asked; every model sha256-checked.

    All are opened before the first frame, so a bad bundle is refused at start and a later switch costs nothing.
    """
    ed = import_detector_module(bundle)
    try:
        main = ed.Detector.from_bundle(bundle, threads=threads, conf=conf)
        entries = main.meta.get("fallback_models", []) if fallbacks else []
        return [main, *(_fallback_detector(ed, bundle, main.meta, entry, threads, conf) for entry in entries)]
    except ed.IntegrityError as exc:
        raise Exit(str(exc), EXIT_TAMPERED) from None
    except ed.BundleError as exc:
        raise Exit(str(exc), EXIT_ERROR) from None
    except Exception as exc:  # the runtime's own load error (corrupt graph, unsupported op): still one line
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Exit(f"cannot load the model in {bundle}: {first_line}", EXIT_ERROR) from None


def _fallback_detector(ed, bundle: Path, meta: dict, entry, threads: int | None, conf: float | None):
    if not isinstance(entry, dict) or not entry.get("model"):
        raise ed.BundleError(f'fallback_models entries need a "model" file name, got {entry!r}')
    fallback_meta = {**meta, "model": entry["model"], "imgsz": int(entry.get("imgsz", meta["imgsz"]))}
    sha = ed.listed_sha256(bundle, fallback_meta)  # the main detector already checked every listed file
    backend = ed.open_backend(meta.get("runtime", ""), bundle, fallback_meta, threads)
    return ed.Detector(backend, fallback_meta, sha, conf)


def to_rgb(image: np.ndarray) -> np.ndarray:
    return cv2_module().cvtColor(image, cv2_module().COLOR_BGR2RGB)


def detection_dict(d) -> dict:
    return {"x1": round(d.x1, 1), "y1": round(d.y1, 1), "x2": round(d.x2, 1), "y2": round(d.y2, 1),
            "score": round(d.score, 4), "class_id": d.class_id, "class_name": d.class_name}


# --- frames ---------------------------------------------------------------------------------

def frame_problem(frame, shape: tuple | None = None) -> str | None:
    """Why a decoded frame cannot be used, or None; `shape` is the shape this connection's frames have had."""
    if not isinstance(frame, np.ndarray):
        return "no image"
    if frame.size == 0:
        return "empty image"
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        return f"not an 8-bit 3-channel image (shape {frame.shape}, dtype {frame.dtype})"
    if shape is not None and frame.shape != shape:
        return f"size {frame.shape[1]}x{frame.shape[0]} differs from the stream's {shape[1]}x{shape[0]}"
    return None


@dataclass(frozen=True)
class Frame:
    index: int  # position among all frames the source returned, so gaps show drops and corrupt frames
    timestamp: float  # wall clock at capture, for consumers
    captured: float  # perf_counter at capture, for latency
    image: np.ndarray  # BGR, as OpenCV decodes


@dataclass(frozen=True)
class Backoff:
    """Exponential reconnect delays, capped, with a limit on consecutive failed attempts (0: never give up)."""

    initial: float = 0.5
    maximum: float = 10.0
    attempts: int = 10

    def delay(self, attempt: int) -> float:
        return min(self.maximum, self.initial * 2 ** (attempt - 1))

    def exhausted(self, attempt: int) -> bool:
        return self.attempts > 0 and attempt > self.attempts


def open_capture(source: int | str, timeout_s: float):
    """An opened cv2.VideoCapture, or None; network URLs get open/read timeouts so a dead host cannot hang us."""
    cv2 = cv2_module()
    if isinstance(source, str) and URL_SCHEME.match(source):
        ms = int(timeout_s * 1000)
        cap = cv2.VideoCapture(source, cv2.CAP_ANY,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    else:
        cap = cv2.VideoCapture(source)
    if cap.isOpened():
        return cap
    cap.release()
    return None


class _Connection:
    """One opened source and its reader thread; abandoned (stale), never released under a blocked read."""

    def __init__(self):
        self.stale = threading.Event()
        self.progress = threading.Event()  # set on each good frame and when the reader stops
        self.outcome: str | None = None
        self.delivered = 0
        self.reader: threading.Thread | None = None


class LatestFrameCapture:
    """Reads a source on its own thread into a one-slot buffer, so the consumer always gets the newest frame.

    A frame overwritten before it was taken counts as dropped: the price of bounded latency. A failed
    read, or a stall (no good frame for stall_timeout s), reopens the source with exponential back-off;
    after too many consecutive failed attempts it gives up and `error` says why. A video file ends at
    its last frame (or starts again with `loop`); `realtime` paces it at its own FPS, like a camera.
    Accounting: frames_read == frames taken + frames_dropped + corrupt_frames once closed.
    """

    def __init__(self, source: int | str, *, realtime: bool = False, loop: bool = False,
                 stall_timeout: float = 5.0, backoff: Backoff = Backoff()):
        self.source = source
        self.is_file = isinstance(source, str) and Path(source).is_file()
        self.realtime, self.loop, self.stall_timeout, self.backoff = realtime, loop, stall_timeout, backoff
        self.frames_read = self.dropped = self.corrupt = self.reconnects = 0
        self.error: str | None = None
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._ended = False
        self._closed = threading.Event()
        self._connection: _Connection | None = None
        self._thread = threading.Thread(target=self._supervise, name="capture", daemon=True)

    def start(self) -> LatestFrameCapture:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        """The source ended or was given up, and its last frame has been taken."""
        with self._cond:
            return self._ended and self._slot is None

    def latest(self, timeout: float = 0.0) -> Frame | None:
        """The newest frame not yet taken, waiting up to `timeout` s for one; None when none came."""
        with self._cond:
            if timeout > 0:
                self._cond.wait_for(lambda: self._slot is not None or self._ended, timeout)
            frame, self._slot = self._slot, None
            return frame

    def stats(self) -> dict:
        with self._cond:
            return {"frames_read": self.frames_read, "frames_dropped": self.dropped,
                    "corrupt_frames": self.corrupt, "reconnects": self.reconnects}

    def close(self) -> None:
        """Stop reading; a frame still waiting in the slot counts as dropped, keeping the accounting exact."""
        with self._cond:
            self._closed.set()
            if self._slot is not None:
                self.dropped += 1
                self._slot = None
            self._ended = True
            self._cond.notify_all()
        connection = self._connection
        if connection is not None:
            connection.stale.set()
            connection.progress.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)  # a read blocked inside the driver cannot be interrupted; it is a daemon
        reader = connection.reader if connection is not None else None
        if reader is not None and reader.is_alive():
            # let the reader leave OpenCV and release the capture: a daemon thread still inside FFmpeg when
            # the interpreter exits can abort the process ("FATAL: exception not rethrown", seen once in CI)
            reader.join(timeout=2.0)

    # --- capture thread -------------------------------------------------------------------

    def _supervise(self) -> None:
        failures = 0
        while not self._closed.is_set():
            cap = open_capture(self.source, self.stall_timeout)
            outcome, delivered = ("cannot open", 0) if cap is None else self._pump(cap)
            if outcome == "closed" or (outcome == "end" and not (self.loop and delivered)):
                break
            if outcome == "end":  # --loop: replay the file from its start
                continue
            failures = 1 if delivered else failures + 1
            if self.backoff.exhausted(failures):
                self._end(f"source {self.source!r} unavailable after {self.backoff.attempts} reconnect attempts "
                          f"(last: {outcome})")
                return
            self._wait_to_reconnect(outcome, failures)
        self._end(None)

    def _wait_to_reconnect(self, outcome: str, attempt: int) -> None:
        delay = self.backoff.delay(attempt)
        limit = f"/{self.backoff.attempts}" if self.backoff.attempts else ""
        warn(f"source {self.source!r}: {outcome}; reconnect attempt {attempt}{limit} in {delay:.2f} s")
        with self._cond:
            self.reconnects += 1
        self._closed.wait(delay)

    def _pump(self, cap) -> tuple[str, int]:
        """Read on a helper thread and watch it: a stall abandons the connection, which may be stuck in a read."""
        connection = _Connection()
        self._connection = connection
        connection.reader = threading.Thread(target=self._read, args=(cap, connection), name="capture-read",
                                             daemon=True)
        connection.reader.start()
        while True:
            if not connection.progress.wait(self.stall_timeout):
                connection.stale.set()
                return f"stalled (no frame for {self.stall_timeout:g} s)", connection.delivered
            connection.progress.clear()
            if self._closed.is_set():
                return "closed", connection.delivered
            if connection.outcome is not None:
                return connection.outcome, connection.delivered

    def _read(self, cap, connection: _Connection) -> None:
        try:
            connection.outcome = self._read_frames(cap, connection)
        except Exception as exc:  # e.g. cv2.error from a broken stream: reconnect now rather than after a stall
            connection.outcome = f"read error ({type(exc).__name__}: {exc})"
        finally:
            cap.release()
            connection.progress.set()

    def _read_frames(self, cap, connection: _Connection) -> str:
        pace = self._pacer(cap)
        length = int(cap.get(cv2_module().CAP_PROP_FRAME_COUNT)) if self.is_file else 0
        shape, attempts, failures = None, 0, 0
        while not connection.stale.is_set():
            pace(connection.stale)
            ok, image = cap.read()
            attempts += 1
            if connection.stale.is_set():
                return "closed"
            if not ok:
                failures += 1
                if not (self.is_file and attempts <= length and failures <= MAX_FILE_READ_FAILURES):
                    return "end" if self.is_file else "read failed"
                self._reject("undecodable frame")  # inside the file: a damaged frame, the rest still plays
                continue
            failures = 0
            problem = frame_problem(image, shape)
            if problem:
                self._reject(problem)
                continue
            shape = image.shape
            self._offer(image)
            connection.delivered += 1
            connection.progress.set()
        return "closed"

    def _pacer(self, cap):
        """For --realtime files: wait until each frame is due at the file's FPS, as a camera would deliver it."""
        if not (self.realtime and self.is_file):
            return lambda stop: None
        fps = cap.get(cv2_module().CAP_PROP_FPS)
        fps = fps if 0 < fps <= 1000 else DEFAULT_FILE_FPS
        start, count = time.perf_counter(), itertools.count()

        def pace(stop: threading.Event) -> None:
            stop.wait(max(0.0, start + next(count) / fps - time.perf_counter()))
        return pace

    def _offer(self, image: np.ndarray) -> None:
        with self._cond:
            if self._closed.is_set():
                return
            self.frames_read += 1
            self.dropped += self._slot is not None
            self._slot = Frame(self.frames_read - 1, time.time(), time.perf_counter(), image)
            self._cond.notify_all()

    def _reject(self, reason: str) -> None:
        with self._cond:
            if self._closed.is_set():
                return
            self.frames_read += 1
            self.corrupt += 1
            index, count = self.frames_read - 1, self.corrupt
        if count == 1 or count % 100 == 0:  # a damaged stream would otherwise flood the log
            warn(f"skipped corrupt frame {index}: {reason} ({count} so far)")

    def _end(self, error: str | None) -> None:
        with self._cond:
            self.error = error
            self._ended = True
            self._cond.notify_all()


# --- statistics -----------------------------------------------------------------------------

def percentiles(values) -> dict:
    if len(values) == 0:
        return {"p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3)}


class LatencyStats:
    """Count, mean and max over all frames; percentiles over the last SUMMARY_WINDOW (bounded memory)."""

    def __init__(self, keep: int = SUMMARY_WINDOW):
        self.recent: deque[float] = deque(maxlen=keep)
        self.count, self.total, self.max = 0, 0.0, 0.0

    def add(self, ms: float) -> None:
        self.recent.append(ms)
        self.count += 1
        self.total += ms
        self.max = max(self.max, ms)

    def summary(self) -> dict:
        mean = round(self.total / self.count, 3) if self.count else None
        return {"count": self.count, "mean": mean, "max": round(self.max, 3), **percentiles(self.recent)}


class Heartbeat:
    """A status line every `interval` s with FPS and latency percentiles over that interval; 0 turns it off."""

    def __init__(self, interval: float):
        self.interval = interval
        self.window: list[float] = []
        self.last = time.perf_counter()

    def add(self, ms: float) -> None:
        self.window.append(ms)

    def line(self, now: float, counters: dict) -> str | None:
        if self.interval <= 0 or now - self.last < self.interval:
            return None
        fps = len(self.window) / (now - self.last)
        p = percentiles(self.window)
        self.window, self.last = [], now
        latency = " ".join(f"{k}={'-' if v is None else v}" for k, v in p.items())
        return f"heartbeat fps={fps:.1f} latency_ms {latency} " + " ".join(f"{k}={v}" for k, v in counters.items())


# --- publishing -----------------------------------------------------------------------------

def encode_datagram(message: dict) -> bytes:
    """JSON that fits one UDP datagram: the lowest-scoring detections are left out, and flagged, when it would not."""
    payload = json.dumps(message, separators=(",", ":")).encode()
    detections = message["detections"]
    while len(payload) > UDP_MAX_PAYLOAD and detections:
        detections = detections[: len(detections) // 2]  # NMS returns them best first
        payload = json.dumps({**message, "detections": detections, "truncated": True}, separators=(",", ":")).encode()
    return payload


class UdpPublisher:
    """One JSON datagram per message; send errors are counted, never fatal (receivers come and go)."""

    def __init__(self, endpoint: tuple[str, int]):
        host, port = endpoint
        try:
            family, kind, proto, _, self.address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except socket.gaierror as exc:
            raise Exit(f"cannot resolve UDP host {host!r}: {exc}", EXIT_ERROR) from None
        self.sock = socket.socket(family, kind, proto)
        self.errors = 0

    def send(self, message: dict) -> None:
        try:
            self.sock.sendto(encode_datagram(message), self.address)
        except OSError:
            self.errors += 1

    def close(self) -> None:
        self.sock.close()
