"""Budget benchmark: edgeprune's budget search against the simple alternatives at equal measured latency.

For each family and budget, from the same checkpoint and with the same fine-tuning epochs:
  (a) budget search: input size x knapsack widths predicted to fit (edgeprune.budget.plan);
  (b) uniform FLOPs pruning at the largest size, its FLOPs goal tuned until its measured latency matches (a)'s;
  (c) the unpruned model at the largest candidate size whose measured latency fits the budget.
Every row is exported in the target's format and precision, its mAP50-95 measured by running the file,
and all files of one family are timed side by side in interleaved turns at the end.

    python -m benchmarks.budget --models edgeprune/baselines/yolo11n-synth.pt --target rpi \
        --budget-fractions 0.5,0.7 --epochs 12 --out bench/budget
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from edgeprune import formats
from edgeprune.budget.costs import predictor_for
from edgeprune.budget.plan import plan_budget, predict_module
from edgeprune.budget.proxy import proxy_map
from edgeprune.budget.sizes import candidate_sizes
from edgeprune.data.dataset import load_dataset
from edgeprune.evaluation.detection import evaluate
from edgeprune.manifest import atomic_write_json, atomic_write_text
from edgeprune.models.checkpoint import load_model
from edgeprune.paths import PROJECT_ROOT
from edgeprune.pruning.structured import PruneConfig, prune, prune_to_widths
from edgeprune.quantize.calibration import calibration_set
from edgeprune.targets import load_target
from edgeprune.training.trainer import finetune_recipe, train


def _export(model, out: Path, target, imgsz: int, dataset, calibration_images: int) -> Path:
    exporter = formats.get(target.device.format)
    calib = (calibration_set(dataset, imgsz, calibration_images) if target.recipe.precision == "int8" else None)
    return exporter.export(model, out, imgsz, target.recipe.precision, calib)


def run(model_path: Path, target_name: str, fractions: list[float], epochs: int, out: Path, threads: int,
        calibration_images: int, eval_limit: int | None) -> dict:
    dataset = load_dataset(PROJECT_ROOT / "datasets" / "synth.yaml")
    target = load_target(target_name, threads=threads)
    base = load_model(model_path)
    sizes = candidate_sizes(target, dataset, base)
    predict = predictor_for(target, None)
    largest = sizes.largest
    unpruned_ms = predict_module(base, largest, predict)
    rows, files = [], {}
    work = out / model_path.stem
    for fraction in fractions:
        budget = round(fraction * unpruned_ms, 3)
        tb = dataclasses.replace(target, budget=dataclasses.replace(target.budget, latency_ms=budget))
        cfg = PruneConfig(round_to=target.device.round_to, imgsz=largest)

        def proxy(m, s):
            return proxy_map(m, dataset, s, calibration_set(dataset, s, 128), 64)

        plan = plan_budget(base, tb, sizes, None, cfg, proxy)
        chosen = plan.chosen
        candidates = {}
        a_cfg = PruneConfig(round_to=target.device.round_to, imgsz=chosen.imgsz)
        candidates["a_budget_search"] = (prune_to_widths(base, chosen.keep, a_cfg)[0] if chosen.pruned else base,
                                         chosen.imgsz, {"plan": plan.summary()})
        # (b) uniform FLOPs pruning at the largest size, its FLOPs goal bisected to (a)'s predicted latency
        # (matched on the prediction; the measured latencies of both are in the table)
        lo, hi, uniform = 0.0, 0.9, None
        for _ in range(8):
            mid = (lo + hi) / 2
            model_b, result = prune(base, PruneConfig(flops_reduction=mid, round_to=target.device.round_to,
                                                      imgsz=largest))
            ms = predict_module(model_b, largest, predict)
            uniform = (model_b, largest, {"flops_reduction": round(result.flops_reduction, 4), "predicted_ms": ms})
            if abs(ms - chosen.predicted_ms) / chosen.predicted_ms < 0.02:
                break
            lo, hi = (mid, hi) if ms > chosen.predicted_ms else (lo, mid)
        candidates["b_uniform_flops"] = uniform
        # (c) unpruned at the largest size predicted within the budget
        fits = [s for s in sizes.candidates if predict_module(base, s, predict) <= budget]
        if fits:
            candidates["c_unpruned_smaller_input"] = (base, fits[0], {})
        for name, (model, imgsz, extra) in candidates.items():
            folder = work / f"budget{fraction:g}" / name
            folder.mkdir(parents=True, exist_ok=True)
            tuned = train(model, dataset, finetune_recipe(epochs, imgsz), folder / "finetune") if epochs else model
            path = _export(tuned, folder / f"model_{target.recipe.precision}{formats.get(target.device.format).caps.suffix}",
                           target, imgsz, dataset, calibration_images)
            runner = formats.load_runner(path, threads=threads, imgsz=imgsz)
            metrics = evaluate(runner.run, dataset, imgsz, desc=f"{name} artefact", limit=eval_limit)
            key = f"{fraction:g}/{name}"
            files[key] = (path, imgsz)
            rows.append({"budget_fraction": fraction, "budget_ms": budget, "row": name, "imgsz": imgsz,
                         "predicted_ms": round(predict_module(model, imgsz, predict), 3),
                         "map50_95": round(metrics["map50_95"], 4), "epochs": epochs,
                         **{k: v for k, v in extra.items() if k != "plan"}})
    # side by side: every file of this family, interleaved (each at its own input size)
    runners = {k: formats.load_runner(p, threads=threads, imgsz=s) for k, (p, s) in files.items()}
    timed = {}
    for _ in range(6):
        for k, r in runners.items():
            imgsz = files[k][1]
            x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
            times = []
            for _ in range(10):
                start = time.perf_counter()
                r.run(x)
                times.append((time.perf_counter() - start) * 1e3)
            timed.setdefault(k, []).extend(times)
    for row in rows:
        t = np.asarray(timed[f"{row['budget_fraction']:g}/{row['row']}"])
        row["measured_p50_ms"], row["measured_p90_ms"] = round(float(np.percentile(t, 50)), 3), \
            round(float(np.percentile(t, 90)), 3)
    return {"model": str(model_path), "target": target_name, "threads": threads, "unpruned_predicted_ms": unpruned_ms,
            "predictor": predict.source, "sizes": list(sizes.candidates), "rows": rows}


def markdown(result: dict) -> str:
    lines = [f"Budget benchmark: {result['model']} on `{result['target']}` ({result['threads']} threads on this host); "
             f"budgets are fractions of the unpruned model's predicted latency ({result['predictor']}).", "",
             "| budget | row | input | predicted ms | measured p50 ms | measured p90 ms | mAP50-95 (artefact) |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['budget_ms']:.2f} ms ({r['budget_fraction']:g}) | {r['row']} | {r['imgsz']} | "
                     f"{r['predicted_ms']:.2f} | {r['measured_p50_ms']:.2f} | {r['measured_p90_ms']:.2f} | "
                     f"{r['map50_95']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(PROJECT_ROOT / "baselines" / "yolo11n-synth.pt"))
    parser.add_argument("--target", default="rpi")
    parser.add_argument("--budget-fractions", default="0.5,0.65,0.8")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-images", type=int, default=100)
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--out", default="bench/budget")
    args = parser.parse_args()
    out = Path(args.out)
    results = [run(Path(m), args.target, [float(f) for f in args.budget_fractions.split(",")], args.epochs, out,
                   args.threads, args.calibration_images, args.eval_limit) for m in args.models.split(",")]
    atomic_write_json(out / "budget.json", results)
    atomic_write_text(out / "budget.md", "\n".join(markdown(r) for r in results))
    print((out / "budget.md").read_text())


if __name__ == "__main__":
    main()
