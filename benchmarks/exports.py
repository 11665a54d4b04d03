"""`make bench`: every artefact measured side by side in one run, against Ultralytics' own exports.

For one model (default: the fine-tuned pruned model of runs/rpi, else the project baseline) this
exports our artefacts and Ultralytics' `export(format=..., int8=True)` ones, then runs each file
on the val split with the same evaluator and times it with the same harness (batch 1, 2 threads).
Results go to bench/export.json and bench/export.md. Host timings compare artefacts on this CPU
(AVX2, no VNNI: INT8 is not expected to beat FP32 here); they are not device latencies.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from edgeprune import formats
from edgeprune.data.build import BUNDLED_YAML, ensure_dataset
from edgeprune.paths import PROJECT_ROOT
from edgeprune.evaluation.detection import evaluate, torch_runner
from edgeprune.evaluation.latency import measure
from edgeprune.manifest import scratch_dir, tool_versions
from edgeprune.models.checkpoint import load_model, save_model
from edgeprune.preflight import DEFAULT_BASELINE
from edgeprune.quantize.calibration import calibration_set
from edgeprune.quantize.guard import export_with_guard

from benchmarks.report import publish

OURS = (("edgeprune", "tflite", "int8"), ("edgeprune", "tflite", "fp32"), ("edgeprune", "onnx", "int8"),
        ("edgeprune", "onnx", "fp32"))
ULTRALYTICS = (("ultralytics", "litert", "int8"), ("ultralytics", "onnx", "fp32"))


def _measure_file(path: Path, dataset, imgsz: int, threads: int, boxes_normalized: bool, limit) -> dict:
    runner = formats.load_runner(path, threads=threads, imgsz=imgsz, boxes_normalized=boxes_normalized)
    out = evaluate(runner.run, dataset, imgsz, desc=f"eval {path.name}", limit=limit)
    out["latency"] = measure(runner.run, imgsz, warmup=10, runs=50)
    out["size_bytes"] = path.stat().st_size
    return out


def _ultralytics_export(checkpoint: Path, fmt: str, int8: bool, data_yaml: Path, imgsz: int, folder: Path) -> Path:
    from ultralytics import YOLO

    local = folder / f"ultra_{fmt}.pt"
    shutil.copyfile(checkpoint, local)
    kwargs = {"format": fmt, "imgsz": imgsz, "batch": 1, "device": "cpu"}
    if int8:
        kwargs.update(int8=True, data=str(data_yaml), fraction=1.0)
    return Path(YOLO(str(local)).export(**kwargs))


def run(model_path: Path, data: str, imgsz: int, calibration_images: int, threads: int, out: Path,
        limit: int | None = None, max_drop: float = 0.01, search_units: int = 6) -> dict:
    torch.set_num_threads(threads)
    dataset = ensure_dataset(data)
    model = load_model(model_path)
    rows = []
    reference = evaluate(torch_runner(model), dataset, imgsz, desc="eval pytorch", limit=limit)
    reference["latency"] = measure(torch_runner(model), imgsz, warmup=5, runs=30)
    rows.append({"tool": "pytorch", "format": "pt", "precision": "fp32", **reference,
                 "size_bytes": model_path.stat().st_size})
    calib = calibration_set(dataset, imgsz, calibration_images)
    with scratch_dir("bench") as tmp:
        tmp = Path(tmp)
        for tool, fmt, precision in OURS:
            exporter = formats.get(fmt)
            path = tmp / f"ours_{precision}{exporter.caps.suffix}"
            start = time.time()
            if precision == "int8":  # what a bundle ships: the accuracy guard's choice, measured on the file
                row = export_with_guard(exporter, model, path, imgsz, precision, calib, reference["map50_95"],
                                        max_drop, lambda f: _measure_file(f, dataset, imgsz, threads, True, limit),
                                        search_units)
            else:
                exporter.export(model, path, imgsz, precision, None)
                row = _measure_file(path, dataset, imgsz, threads, True, limit)
            rows.append({"tool": tool, "format": fmt, "precision": precision, "export_s": round(time.time() - start, 1),
                         **row})
        checkpoint = save_model(model, tmp / "model.pt")
        data_yaml = dataset.ultralytics_yaml(tmp / "data.yaml")
        for tool, fmt, precision in ULTRALYTICS:
            start = time.time()
            try:
                path = _ultralytics_export(checkpoint, fmt, precision == "int8", data_yaml, imgsz, tmp)
                row = _measure_file(path, dataset, imgsz, threads, fmt != "onnx", limit)
            except Exception as error:  # their exporter failing is itself a result worth reporting
                row = {"error": f"{type(error).__name__}: {error}"[:300]}
            rows.append({"tool": tool, "format": fmt, "precision": precision,
                         "export_s": round(time.time() - start, 1), **row})
    for row in rows:
        if "map50_95" in row:
            row["map_retention"] = round(row["map50_95"] / reference["map50_95"], 4) if reference["map50_95"] else None
    result = {"model": str(model_path), "data": str(data), "imgsz": imgsz, "threads": threads,
              "calibration_images": calibration_images, "rows": rows, "tools": tool_versions()}
    publish(out, "export", result, markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [f"# Export benchmark — {result['model']} @ {result['imgsz']} px, {result['threads']} threads", "",
             "| tool | format | precision | mAP50-95 | mAP50 | retention vs PyTorch FP32 | host p50 ms | size MB "
             "| kept in float (INT8 guard) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['tool']} | {r['format']} | {r['precision']} | failed: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['tool']} | {r['format']} | {r['precision']} | {r['map50_95']:.3f} | {r['map50']:.3f} | "
                     f"{r.get('map_retention') or 0:.1%} | {r['latency']['p50_ms']:.2f} | "
                     f"{r['size_bytes'] / 1e6:.2f} | {r.get('accuracy_guard', {}).get('chosen', '')} |")
    lines += ["", "Same evaluator (letterbox, NMS, pycocotools) and timing harness (batch 1) for every row; "
              "host CPU timings, not device latencies.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    default_model = PROJECT_ROOT / "runs" / "rpi" / "finetune" / "model.pt"
    parser.add_argument("--model", default=str(default_model if default_model.exists() else DEFAULT_BASELINE))
    parser.add_argument("--data", default=str(BUNDLED_YAML))
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--calibration-images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N val images")
    parser.add_argument("--out", default="bench")
    args = parser.parse_args(argv)
    run(Path(args.model), args.data, args.imgsz, args.calibration_images, args.threads, Path(args.out), args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
