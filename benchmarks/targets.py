"""`make bench-targets`: one checkpoint through every target's artefact, each artefact's mAP measured by running it.

Unlike `make deploy`, nothing is pruned or fine-tuned here: the checkpoint (e.g. a pruned, fine-tuned model) is
exported with each profile's format, precision and INT8 guard, so the rows differ only in the export. mAP50-95:
pycocotools on the bundled val split; CoreML cannot predict on Linux, so its row is the labelled int8-weight proxy.

    python -m benchmarks.targets --checkpoint baselines/yolo26n-synth.pt --out bench/targets
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import edgeprune as ep
from edgeprune import formats
from edgeprune.manifest import tool_versions
from benchmarks.report import publish

TARGETS = ("rpi", "jetson", "ios", "host")


def run_target(model: torch.nn.Module, name: str, data, imgsz: int, folder: Path, reference: float) -> dict:
    target = ep.load_target(name)
    fmt, precision = target.device.format, target.recipe.precision
    quantize = target.recipe.quantize
    guard = ep.Guard(quantize.max_map_drop, quantize.guard_search_units) if precision == "int8" else None
    start = time.time()
    suffix = formats.get(fmt).caps.suffix
    out = ep.export(model, fmt, folder / name / f"model_{precision}{suffix}", imgsz, precision, data=data, guard=guard)
    metrics = out.metrics
    chosen = metrics.get("accuracy_guard", {}).get("chosen", "")
    return {"target": name, "format": fmt, "precision": precision, "artefact": out.path.name,
            "runtime": metrics.get("runtime", ""), "map50_95": metrics["map50_95"],
            "retention": round(metrics["map50_95"] / reference, 4) if reference else None,
            "kept_in_float": chosen, "size_bytes": metrics.get("size_bytes"), "wall_s": round(time.time() - start, 1)}


def markdown(result: dict) -> str:
    lines = [f"# Every target's artefact from {Path(result['checkpoint']).name} ({result['imgsz']} px)", "",
             f"`{result['command']}` — PyTorch FP32 reference mAP50-95 {result['reference_map50_95']:.4f}", "",
             "| target | artefact | runtime | mAP50-95 | retention | kept in float |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['target']} | `{r['artefact']}` ({r['precision']}) | {r['runtime']} | "
                     f"{r['map50_95']:.4f} | {'—' if r['retention'] is None else format(r['retention'], '.1%')} | "
                     f"{r['kept_in_float'] or '—'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default="baselines/yolo26n-synth.pt")
    parser.add_argument("--data", default="datasets/synth.yaml")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/targets")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = ep.load_dataset(args.data)
    model = ep.load(args.checkpoint)
    reference = ep.evaluate(model, data, args.imgsz)["map50_95"]
    rows = [run_target(model, name, data, args.imgsz, out, reference) for name in args.targets.split(",")]
    result = {"command": "python -m benchmarks.targets " + " ".join(sys.argv[1:] if argv is None else argv),
              "checkpoint": args.checkpoint, "imgsz": args.imgsz, "reference_map50_95": round(reference, 4),
              "rows": rows, "tools": tool_versions()}
    publish(out, "targets", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
