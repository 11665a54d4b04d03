"""`make bench-prune`: what structured pruning buys on the host, measured side by side in one run.

For each family (random-initialised from its yaml: speed does not depend on the weights) and each
FLOPs-reduction goal this reports params, GFLOPs and ONNX Runtime CPU latency (p50, 2 threads,
batch 1) of the pruned model next to the unpruned one, as ratios. Accuracy after fine-tuning is
a separate, much longer measurement (`make deploy` reports it for the bundled dataset).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from edgeprune import runtimes
from edgeprune.evaluate.latency import measure
from edgeprune.export.onnx import export_fp32
from edgeprune.manifest import atomic_write_json, atomic_write_text, tool_versions
from edgeprune.prune.structured import PruneConfig, count_macs, prune

MODELS = ("yolo11n.yaml", "yolov8n.yaml", "yolo26n.yaml")
REDUCTIONS = (0.3, 0.5, 0.7)


def _onnx_latency(model: torch.nn.Module, imgsz: int, threads: int, folder: Path) -> dict:
    path = export_fp32(model, imgsz, folder / f"m{time.monotonic_ns()}.onnx")
    runner = runtimes.load(path, threads=threads, imgsz=imgsz)
    return measure(runner.run, imgsz, warmup=5, runs=30)


def run(models=MODELS, reductions=REDUCTIONS, imgsz: int = 640, threads: int = 2, nc: int = 80) -> dict:
    from ultralytics.nn.tasks import DetectionModel

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-prune-") as tmp:
        for spec in models:
            torch.manual_seed(0)
            model = DetectionModel(spec, nc=nc, verbose=False).eval()
            macs0, params0 = count_macs(model, imgsz)
            base = _onnx_latency(model, imgsz, threads, Path(tmp))
            rows.append({"model": spec, "flops_goal": 0.0, "params": params0, "gflops": round(2 * macs0 / 1e9, 3),
                         "p50_ms": base["p50_ms"], "latency_ratio": 1.0, "flops_ratio": 1.0, "locked": 0})
            for goal in reductions:
                start = time.time()
                pruned, result = prune(model, PruneConfig(flops_reduction=goal, imgsz=imgsz))
                lat = _onnx_latency(pruned, imgsz, threads, Path(tmp))
                rows.append({"model": spec, "flops_goal": goal, "params": result.params_after,
                             "gflops": round(2 * result.macs_after / 1e9, 3), "p50_ms": lat["p50_ms"],
                             "latency_ratio": round(lat["p50_ms"] / base["p50_ms"], 3),
                             "flops_ratio": round(result.macs_after / macs0, 3), "locked": len(result.locked),
                             "prune_s": round(time.time() - start, 1)})
                print(rows[-1], flush=True)
    return {"imgsz": imgsz, "threads": threads, "nc": nc, "rows": rows, "tools": tool_versions()}


def markdown(result: dict) -> str:
    lines = [f"# Pruning benchmark — {result['imgsz']} px, ONNX Runtime CPU, {result['threads']} threads, batch 1", "",
             "| model | FLOPs goal | params (M) | GFLOPs | FLOPs ratio | ORT p50 ms | latency ratio |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['flops_goal']:.0%} | {r['params'] / 1e6:.2f} | {r['gflops']:.2f} | "
                     f"{r['flops_ratio']:.2f} | {r['p50_ms']:.1f} | {r['latency_ratio']:.2f} |")
    return "\n".join(lines + ["", "Ratios are pruned / unpruned, measured in the same run on the same machine.", ""])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--out", default="bench")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args.models, REDUCTIONS, args.imgsz, args.threads)
    out = Path(args.out)
    atomic_write_json(out / "prune.json", result)
    atomic_write_text(out / "prune.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
