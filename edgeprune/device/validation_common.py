"""What every validate_<runtime>.py shares: CLI, integrity check, timing loop, report and exit code.

Exit codes: 0 within budget (or a dry run), 1 over budget, 2 usage or environment error,
3 model failed its sha256 check (nothing was run).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import device_cli
from device_cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_TAMPERED, fail  # noqa: F401  (the scripts' codes)
from edgeprune_detector import (BundleError, Detector, IntegrityError, atomic_write, load_image, load_metadata,
                                verify_model)

EXIT_OVER_BUDGET = EXIT_FAILED
DRY_RUN_RUNS, DRY_RUN_WARMUP = 5, 2  # enough to exercise every code path on a host, quickly
FRAME_W, FRAME_H, FRAME_SEED = 640, 480, 0  # a camera-sized frame, so preprocessing costs what it will
STAGES = ("preprocess", "infer", "postprocess", "end_to_end")


def parser(description: str, script: str) -> argparse.ArgumentParser:
    """The options every script accepts; `script` is its __file__, whose folder is the default bundle."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path(script).resolve().parent,
                   help="bundle folder with metadata.json (default: this script's folder)")
    p.add_argument("--warmup", type=device_cli.non_negative_int, default=20, help="untimed runs first (default 20)")
    p.add_argument("--runs", type=device_cli.positive_int, default=200, help="timed runs (default 200)")
    p.add_argument("--threads", type=device_cli.positive_int, default=os.cpu_count() or 1,
                   help="CPU threads for the runtime (default: all cores)")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="JSON report path (default results.json)")
    p.add_argument("--budget-ms", type=device_cli.positive_float, help="latency budget (default: metadata latency_budget.ms)")
    p.add_argument("--percentile", type=device_cli.percentile,
                   help="percentile compared with the budget (default: metadata latency_budget.percentile)")
    p.add_argument("--budget-on", choices=("end_to_end", "infer"), default="end_to_end",
                   help="which latency the budget applies to (default end_to_end: what the application sees)")
    p.add_argument("--image", type=Path, nargs="+",
                   help=f"test image(s); timing uses the first (default: seeded random {FRAME_W}x{FRAME_H} RGB)")
    p.add_argument("--dump-outputs", type=Path, metavar="NPZ",
                   help="also write each image's model input, raw output and detections, for cross-checks "
                        "(host vs emulated device, runtime vs runtime)")
    p.add_argument("--postprocess-from", type=Path, metavar="NPZ",
                   help="with --dump-outputs: decode another run's raw outputs here too, to check this "
                        "machine's post-processing on its own")
    p.add_argument("--dry-run", action="store_true",
                   help=f"at most {DRY_RUN_RUNS} runs, never fails on the budget: checks the script on a host")
    return p


# The device skeleton's one-line errors: a tampered model exits 3, what the operator can fix exits 2.
cli = device_cli.cli_with(errors=((IntegrityError, EXIT_TAMPERED),
                                  ((BundleError, ImportError, OSError, ValueError), EXIT_ERROR)))


def verify(args) -> dict:
    """Metadata of a bundle whose model matches its sha256, for scripts that must check before anything else."""
    meta = load_metadata(args.bundle)
    verify_model(args.bundle, meta)
    return meta


def open_detector(args, runtime: str, **backend_options) -> Detector:
    """A verified detector (exit 3 on a tampered model happens here, before any timing)."""
    if args.postprocess_from and not args.dump_outputs:
        raise ValueError("--postprocess-from needs --dump-outputs (the decoded detections are written there)")
    return Detector.from_bundle(args.bundle, runtime=runtime, threads=args.threads, **backend_options)


def input_images(args) -> list[tuple[np.ndarray, str]]:
    if args.image:
        return [(load_image(path), str(path)) for path in args.image]
    rng = np.random.default_rng(FRAME_SEED)
    frame = rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)
    return [(frame, f"random {FRAME_W}x{FRAME_H} seed {FRAME_SEED}")]


def input_image(args) -> tuple[np.ndarray, str]:
    """The image that is timed (the first one): the others are only read when outputs are dumped."""
    if args.image:
        return load_image(args.image[0]), str(args.image[0])
    return input_images(args)[0]


def run_counts(args) -> tuple[int, int]:
    if args.dry_run:
        return min(args.warmup, DRY_RUN_WARMUP), min(args.runs, DRY_RUN_RUNS)
    return args.warmup, args.runs


def measure(detector: Detector, image: np.ndarray, warmup: int, runs: int) -> tuple[dict, int]:
    """Time each stage of the full detector per run; returns per-stage lists in ms and the last detection count."""
    size = (image.shape[1], image.shape[0])
    times = {stage: [] for stage in STAGES}
    detections = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        x, box = detector.preprocess(image)
        t1 = time.perf_counter()
        raw = detector.infer(x)
        t2 = time.perf_counter()
        detections = detector.postprocess(raw, box, size)
        t3 = time.perf_counter()
        if i >= warmup:
            for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                times[stage].append(seconds * 1000)
    return times, len(detections)


def summarize(times_ms: list[float]) -> dict:
    t = np.asarray(times_ms, dtype=np.float64)
    mean = float(t.mean())
    return {"p50": round(float(np.percentile(t, 50)), 3), "p90": round(float(np.percentile(t, 90)), 3),
            "p99": round(float(np.percentile(t, 99)), 3), "mean": round(mean, 3), "min": round(float(t.min()), 3),
            "max": round(float(t.max()), 3), "fps": round(1000 / mean, 2) if mean > 0 else None, "runs": len(t)}


def budget(args, meta: dict, times: dict) -> dict:
    declared = meta.get("latency_budget", {})
    ms = args.budget_ms if args.budget_ms is not None else declared.get("ms")
    percentile = args.percentile if args.percentile is not None else declared.get("percentile", 90)
    measured = round(float(np.percentile(times[args.budget_on], percentile)), 3)
    return {"ms": ms, "percentile": percentile, "on": args.budget_on, "measured_ms": measured,
            "pass": ms is None or measured <= ms}


def device_info() -> dict:
    """What the numbers were measured on; the board name comes from the device tree on Pi/Jetson."""
    board = Path("/proc/device-tree/model")
    return {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "system": platform.system(), "node": platform.node(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "board": board.read_bytes().rstrip(b"\0").decode(errors="replace") if board.exists() else None}


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def detections_array(detections) -> np.ndarray:
    """(n, 6) float64 rows x1 y1 x2 y2 score class: what two machines must agree on."""
    rows = [(d.x1, d.y1, d.x2, d.y2, d.score, d.class_id) for d in detections]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def dump_outputs(args, detector: Detector) -> None:
    """Per image i: `i/input` (model input), `i/raw` (model output), `i/detections`; with --postprocess-from,
    `i/detections_from_reference` decodes the other run's raw output on this machine."""
    reference = np.load(args.postprocess_from) if args.postprocess_from else None
    arrays = {}
    for i, (image, label) in enumerate(input_images(args)):
        size = (image.shape[1], image.shape[0])
        x, box = detector.preprocess(image)
        raw = detector.infer(x)
        arrays.update({f"{i}/input": x, f"{i}/raw": raw,
                       f"{i}/detections": detections_array(detector.postprocess(raw, box, size))})
        if reference is not None:
            if f"{i}/raw" not in reference:
                raise ValueError(f"{args.postprocess_from} has no raw output for image {i} ({label})")
            decoded = detector.postprocess(reference[f"{i}/raw"], box, size)
            arrays[f"{i}/detections_from_reference"] = detections_array(decoded)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(Path(args.dump_outputs), buffer.getvalue())


def report(args, detector: Detector, times: dict, detections: int, image_label: str, runtime: str | None = None,
           extra: dict | None = None) -> int:
    """Write the JSON report, print one summary line and return the exit code."""
    meta = detector.meta
    verdict = budget(args, meta, times)
    warmup, runs = run_counts(args)
    data = {"target": meta.get("target"), "runtime": runtime or detector.runtime,
            "runtime_version": detector.runtime_version, "model": meta.get("model"),
            "model_sha256": detector.model_sha256, "precision": meta.get("precision"), "imgsz": detector.imgsz,
            "device": device_info(), "threads": args.threads, "warmup": warmup, "runs": runs, "image": image_label,
            "detections": detections, "latency_ms": {stage: summarize(times[stage]) for stage in STAGES},
            "budget": verdict, "dry_run": args.dry_run, "timestamp": datetime.now(timezone.utc).isoformat(),
            **(extra or {})}
    write_json(args.out, data)
    if args.dump_outputs:
        dump_outputs(args, detector)
    print(summary_line(data, args.out))
    if args.dry_run or verdict["pass"]:
        return EXIT_OK
    return EXIT_OVER_BUDGET


def summary_line(data: dict, out: Path) -> str:
    b, e2e, infer = data["budget"], data["latency_ms"]["end_to_end"], data["latency_ms"]["infer"]
    verdict = "PASS" if b["pass"] else "FAIL"
    limit = "no budget" if b["ms"] is None else f"{'<=' if b['pass'] else '>'} {b['ms']} ms"
    return (f"{'DRY-RUN ' if data['dry_run'] else ''}{verdict} {data['target']} {data['runtime']}: "
            f"{b['on']} p{b['percentile']:g} {b['measured_ms']} ms {limit} | end-to-end p50 {e2e['p50']} ms "
            f"({e2e['fps']} FPS), infer p50 {infer['p50']} ms | {data['runs']} runs, {data['threads']} threads "
            f"-> {out}")


def validate(args, runtime: str, prepare=None, **backend_options) -> int:
    """The whole flow for a runtime the Detector opens; `prepare(detector)` runs before timing."""
    detector = open_detector(args, runtime, **backend_options)
    if prepare is not None:
        prepare(detector)
    image, label = input_image(args)
    times, detections = measure(detector, image, *run_counts(args))
    return report(args, detector, times, detections, label)
