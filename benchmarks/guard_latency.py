"""`make bench-guard-latency`: what each INT8 guard level costs in latency, side by side.

The INT8 guard runs after the budget plan and may keep parts of the graph in float (LiteRT: the box/score
decoding, then also the head's output convs; QDQ ONNX: the head's output convs). If a float part were
slower, and more so as pruning shrinks the rest, a plan that timed the all-INT8 file could ship over its
budget; plans time INT8 at the guard's last level (`Format.timing_scope`) for that reason. This measures
how much it matters: per checkpoint, input size and FLOPs goal, the model is exported at every guard level
(sharing one FP32 conversion, as the guard does) and the files are timed in interleaved turns, reported as
p90 and as a ratio to the all-INT8 file.

    python -m benchmarks.guard_latency --format tflite --out bench/guard-latency   # make bench-guard-latency
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeprune import formats
from edgeprune.data.build import ensure_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.formats.base import ExportCache
from edgeprune.evaluation.latency import measure_interleaved
from edgeprune.manifest import scratch_dir, tool_versions
from edgeprune.models.checkpoint import load_model
from edgeprune.pruning.structured import PruneConfig, prune
from edgeprune.quantize.calibration import calibration_set
from benchmarks.report import publish


def time_levels(exporter, model, imgsz: int, calibration, folder: Path, threads: int, rounds: int) -> dict:
    """p50/p90 ms of `model` exported at each of the format's guard levels, timed side by side; a level whose
    export fails (as the guard would skip it) is recorded with the reason."""
    runs, failed, cache = {}, {}, ExportCache(folder / "cache")
    for level in exporter.caps.guard_levels:
        try:
            path = exporter.export(model, folder / f"{level.replace('/', '-')}{exporter.caps.suffix}", imgsz, "int8",
                                   calibration, float_scope=level, cache=cache)
        except EdgepruneError as error:
            failed[level] = {"failed": error.problem}
            continue
        runs[level] = exporter.load_runner(path, threads=threads, imgsz=imgsz).run
    timed = measure_interleaved(runs, imgsz, rounds=rounds)
    first = timed[exporter.caps.guard_levels[0]]["p90_ms"]
    out = {level: {"p50_ms": round(t["p50_ms"], 3), "p90_ms": round(t["p90_ms"], 3),
                   "p90_ratio": round(t["p90_ms"] / first, 3)} for level, t in timed.items()}
    return {level: out.get(level) or failed[level] for level in exporter.caps.guard_levels}


def run(fmt: str, models, imgsizes, goals, data: str, threads: int = 2, rounds: int = 12) -> dict:
    exporter = formats.get(fmt)
    dataset = ensure_dataset(data)
    rows = []
    with scratch_dir("benchguardlatency") as tmp:
        for checkpoint in models:
            base = load_model(Path(checkpoint))
            for imgsz in imgsizes:
                calibration = calibration_set(dataset, imgsz, 32)
                for goal in goals:
                    model = prune(base, PruneConfig(flops_reduction=goal, imgsz=imgsz))[0] if goal else base
                    folder = Path(tmp) / f"{Path(checkpoint).stem}-{imgsz}-{goal}"
                    folder.mkdir()
                    levels = time_levels(exporter, model, imgsz, calibration, folder, threads, rounds)
                    rows.append({"model": checkpoint, "imgsz": imgsz, "flops_goal": goal, "levels": levels})
                    print(rows[-1], flush=True)
    return {"format": fmt, "threads": threads, "rounds": rounds, "timing_scope": exporter.timing_scope("int8"),
            "rows": rows, "tools": tool_versions()}


def markdown(result: dict) -> str:
    levels = list(result["rows"][0]["levels"]) if result["rows"] else []
    lines = [f"# INT8 guard levels' latency — {result['format']}, {result['threads']} threads, "
             f"{result['rounds']} interleaved rounds", "",
             f"p90 ms (ratio to `{levels[0] if levels else 'none'}`); plans time INT8 at `{result['timing_scope']}`.",
             "", "| model | px | FLOPs goal | " + " | ".join(levels) + " |", "|---|---|---|" + "---|" * len(levels)]
    for r in result["rows"]:
        cells = [f"{t['p90_ms']:.2f} ({t['p90_ratio']:.2f}x)" if "p90_ms" in t else "export failed"
                 for t in (r["levels"][lv] for lv in levels)]
        lines.append(f"| {Path(r['model']).stem} | {r['imgsz']} | {r['flops_goal']:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", default="tflite", help="an INT8 format with guard levels: tflite or onnx")
    parser.add_argument("--models", nargs="*", default=["baselines/yolo26n-synth.pt", "baselines/yolo11n-synth.pt"])
    parser.add_argument("--imgsz", nargs="*", type=int, default=[256, 192])
    parser.add_argument("--goals", nargs="*", type=float, default=[0.0, 0.5], help="FLOPs-reduction goals")
    parser.add_argument("--data", default="datasets/synth.yaml", help="calibration images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12, help="interleaved turns, 5 timed runs each")
    parser.add_argument("--out", default="bench/guard-latency")
    args = parser.parse_args(argv)
    result = run(args.format, args.models, args.imgsz, args.goals, args.data, args.threads, args.rounds)
    publish(Path(args.out), "guard-latency", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
