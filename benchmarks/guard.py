"""The INT8 guard under a forced budget: how far its levels and its sensitivity search get on one model.

`python -m benchmarks.guard --format tflite --max-drop 0.001` exports the fine-tuned model
through the guard with a budget tight enough that every fixed level misses, so the per-model search
runs; the JSON records every candidate (mAP50-95 of the exported file), the block ranking and the
wall time. The default model is the rpi run's fine-tuned checkpoint (`make deploy TARGET=rpi`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edgeprune import formats
from edgeprune.data.build import ensure_dataset
from edgeprune.evaluation.detection import evaluate, torch_runner
from edgeprune.manifest import atomic_write_json
from edgeprune.models.checkpoint import load_model
from edgeprune.quantize.calibration import calibration_set
from edgeprune.quantize.guard import export_with_guard


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--format", default="tflite", help="int8 exporter: tflite, onnx or tensorrt")
    parser.add_argument("--model", default="runs/rpi/finetune/model.pt")
    parser.add_argument("--data", default="datasets/synth.yaml")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--calibration-images", type=int, default=200)
    parser.add_argument("--max-drop", type=float, default=0.001, help="mAP50-95 budget (tight: forces the search)")
    parser.add_argument("--search-units", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench")
    args = parser.parse_args(argv)
    dataset = ensure_dataset(args.data)
    model = load_model(args.model)
    reference = evaluate(torch_runner(model), dataset, args.imgsz, desc="eval pytorch")["map50_95"]
    calib = calibration_set(dataset, args.imgsz, args.calibration_images)
    exporter = formats.get(args.format)

    def measure(path: Path) -> dict:
        return evaluate(formats.load_runner(path, threads=args.threads, imgsz=args.imgsz).run, dataset, args.imgsz,
                        desc=f"eval {path.parent.name}")

    out = Path(args.out) / f"guard-{args.format}"
    start = time.time()
    metrics = export_with_guard(exporter, model, out / f"model_int8{exporter.caps.suffix}", args.imgsz, "int8",
                                calib, reference, args.max_drop, measure, args.search_units)
    result = {"model": args.model, "format": args.format, "fp32_map50_95": reference,
              "wall_s": round(time.time() - start, 1), "retention": round(metrics["map50_95"] / reference, 4),
              **metrics["accuracy_guard"]}
    atomic_write_json(out / "guard.json", result)
    print(f"{args.format}: FP32 {reference:.4f} -> INT8 {metrics['map50_95']:.4f} ({result['retention']:.2%}), "
          f"kept in float: {result['chosen']}, within budget: {result['within_budget']}, {result['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
