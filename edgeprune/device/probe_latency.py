#!/usr/bin/env python3
"""Time every model of an edgeprune latency probe on this device and write the latency table.

    python3 probe_latency.py --threads 4 --out rpi-latency.json

Needs only numpy and the device's runtime (the same backends as the bundles' validate scripts).
Every probe model's sha256 is checked before anything runs. The models are timed in interleaved
rounds (each round runs every model), so slow drift of clocks or temperature spreads over all of
them instead of biasing the last ones. On a Jetson with trtexec on PATH, TensorRT engines are
built and timed by trtexec (--exportTimes), else ONNX Runtime runs the QDQ files (labelled). With ONNX
Runtime each model's own per-operator profile is recorded too (`ops_ms`: what does not shrink with pruning).
Exit codes: 0 written, 2 usage or environment error, 3 a probe model failed its sha256 check.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import device_cli  # noqa: E402
from edgeprune_detector import (BundleError, IntegrityError, OnnxRuntimeBackend, TFLiteBackend,  # noqa: E402
                                atomic_write, canonical_sha256, package_version, sha256_path)
from validation_common import device_info, summarize  # noqa: E402  (what the validate scripts report)

PROBE_FILE = "probe.json"
TABLE_VERSION = 1
DRY_RUN_WARMUP, DRY_RUN_RUNS, DRY_RUN_ROUNDS = 1, 2, 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probe", type=Path, default=Path(__file__).resolve().parent,
                   help="probe folder with probe.json (default: this script's folder)")
    p.add_argument("--threads", type=device_cli.positive_int, help="CPU threads (default: the probe's target)")
    p.add_argument("--warmup", type=device_cli.non_negative_int, default=5, help="untimed runs per model first")
    p.add_argument("--runs", type=device_cli.positive_int, default=10, help="timed runs per model per round")
    p.add_argument("--rounds", type=device_cli.positive_int, default=4, help="interleaved rounds over all models")
    p.add_argument("--out", type=Path, default=Path("latency.json"), help="table path (default latency.json)")
    p.add_argument("--dry-run", action="store_true", help="a couple of runs per model: checks the probe on a host")
    p.add_argument("--op-profile-runs", type=device_cli.non_negative_int, default=5,
                   help="ONNX Runtime: profiled runs per model for the per-operator breakdown (0: none)")
    return p.parse_args(argv)


def verified_probe(folder: Path) -> dict:
    path = folder / PROBE_FILE
    if not path.is_file():
        raise BundleError(f"no {PROBE_FILE} in {folder}; pass --probe <folder> (the copied probe bundle)")
    probe = json.loads(path.read_text())
    for model in probe["models"]:
        file = folder / model["file"]
        if not file.exists():
            raise IntegrityError(f"probe model {model['file']} is missing: copy the whole probe folder")
        if sha256_path(file) != model["sha256"]:
            raise IntegrityError(f"probe model {model['file']} does not match its sha256 in {PROBE_FILE} "
                                 "(truncated or changed): copy the probe again")
    return probe


def open_runner(runtime: str, path: Path, threads: int):
    """(run(x), runtime label, runtime package) for one probe model."""
    if runtime == "tflite":
        backend = TFLiteBackend(path, threads)
        return backend.run, backend.name, backend.package
    if runtime in ("onnxruntime", "tensorrt"):
        backend = OnnxRuntimeBackend(path, threads)
        label = "onnxruntime" if runtime == "onnxruntime" else "onnxruntime (tensorrt unavailable)"
        return backend.run, label, backend.package
    raise BundleError(f"probe runtime {runtime!r} cannot be timed by this script (coreml: use Xcode's performance "
                      "report on a Mac)")


def time_interleaved(runners: dict, shapes: dict, warmup: int, runs: int, rounds: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    inputs = {name: rng.random(shape, dtype=np.float32) for name, shape in shapes.items()}
    for name, run in runners.items():
        for _ in range(warmup):
            run(inputs[name])
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                run(inputs[name])
                times[name].append((time.perf_counter() - t0) * 1000)
    return times


def ort_op_profile(path: Path, threads: int, shape: tuple, runs: int, by: str = "op") -> dict[str, float]:
    """ONNX Runtime's own per-node profile, summed per operator type (by="op") or kept per graph node
    (by="node": node names carry the exporting module's path): milliseconds per inference."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the detector runs it
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        feed = {session.get_inputs()[0].name: x}
        session.run(None, feed)  # warm-up, profiled too: dropped below by counting from the second run
        for _ in range(runs):
            session.run(None, feed)
        events_path = session.end_profiling()
        events = json.loads(Path(events_path).read_text())
    per_op: dict[str, float] = {}
    node_runs = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    for event in node_runs:
        op = event["name"].removesuffix("_kernel_time") if by == "node" else event.get("args", {}).get("op_name", "?")
        per_op[op] = per_op.get(op, 0.0) + float(event.get("dur", 0)) / 1000
    return {op: round(ms / (runs + 1), 4) for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])}


def trtexec_times(path: Path, precision: str, runs: int) -> list[float]:
    """Build an engine and time it with trtexec; per-inference latencies from its --exportTimes JSON."""
    flags = ["--int8", "--fp16"] if precision == "int8" else ["--fp16"]
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times.json"
        subprocess.run(["trtexec", f"--onnx={path}", *flags, f"--iterations={runs}", "--warmUp=200",
                        f"--exportTimes={times}", f"--exportProfile={Path(tmp) / 'profile.json'}",
                        "--dumpProfile", "--separateProfileRun"], check=True, capture_output=True)
        return trtexec_latencies(json.loads(times.read_text()))


def trtexec_latencies(records: list) -> list[float]:
    """trtexec --exportTimes writes one object per inference with latencyMs (enqueue to output ready)."""
    return [float(r["latencyMs"]) for r in records if isinstance(r, dict) and "latencyMs" in r]


@device_cli.cli_with(errors=((IntegrityError, device_cli.EXIT_TAMPERED),
                             ((BundleError, ImportError, OSError, ValueError, KeyError), device_cli.EXIT_ERROR)))
def main(argv=None) -> int:
    args = parse_args(argv)
    probe = verified_probe(args.probe)
    threads = args.threads or int(probe["threads"])
    warmup, runs, rounds = ((min(args.warmup, DRY_RUN_WARMUP), min(args.runs, DRY_RUN_RUNS), DRY_RUN_ROUNDS)
                            if args.dry_run else (args.warmup, args.runs, args.rounds))
    models = {m["name"]: m for m in probe["models"]}
    runtime = probe["runtime"]
    if runtime == "tensorrt" and shutil.which("trtexec"):
        times = {name: trtexec_times(args.probe / m["file"], probe["precision"], runs * rounds)
                 for name, m in models.items()}
        label, package = "tensorrt (trtexec)", "tensorrt"
    else:
        opened = {name: open_runner(runtime, args.probe / m["file"], threads) for name, m in models.items()}
        label, package = next(iter(opened.values()))[1:]
        shapes = {name: (1, 3, m["imgsz"], m["imgsz"]) for name, m in models.items()}
        times = time_interleaved({n: o[0] for n, o in opened.items()}, shapes, warmup, runs, rounds)
    ops = {}
    if runtime == "onnxruntime" and args.op_profile_runs and not args.dry_run:
        ops = {name: ort_op_profile(args.probe / m["file"], threads, (1, 3, m["imgsz"], m["imgsz"]),
                                    args.op_profile_runs) for name, m in models.items()}
    table = {"format_version": TABLE_VERSION, "kind": "edgeprune-latency-table", "probe": probe,
             "probe_sha256": canonical_sha256(probe), "device": device_info(), "runtime": runtime,
             "runtime_label": label, "runtime_package": package, "runtime_version": package_version(package),
             "threads": threads, "precision": probe["precision"], "dry_run": args.dry_run,
             "timing": {"warmup": warmup, "runs_per_round": runs, "rounds": rounds, "order": "interleaved"},
             "results": [{"name": name, "sha256": models[name]["sha256"], **summarize(t),
                          **({"ops_ms": ops[name]} if name in ops else {})} for name, t in times.items()]}
    atomic_write(args.out, (json.dumps(table, indent=2) + "\n").encode())
    print(f"latency table: {len(table['results'])} models, {label} {table['runtime_version']}, {threads} threads"
          f"{' (dry run)' if args.dry_run else ''} -> {args.out}")
    return device_cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
