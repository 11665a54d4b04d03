"""`make bench-ops`: where ONNX Runtime spends its time, per operator type, before and after pruning.

Why pruning half the FLOPs does not halve latency, measured: per family (random weights: time does not depend
on their values), the unpruned model and its pruning to each FLOPs goal are exported as FP32 ONNX and profiled
with ONNX Runtime's own per-node profiler (`ort_op_profile`, the same profile the device probe records). For
each operator type: ms per inference unpruned and pruned, and their ratio. For the attention blocks (nodes
under an `attn` module): their total share, and the share of the part channel pruning cannot touch
(everything but their convs: MatMul, Softmax, reshapes). With `--heads` the pruned models also drop half of
every attention block's heads. Each model's profile is a separate set of runs, so absolute ms drift with
this shared machine; the per-op ratios within one family come from profiles taken back to back.

    python -m benchmarks.ops --models yolo26n.yaml yolo11n.yaml --imgsz 640 256 --out bench/ops   # make bench-ops
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from edgeprune.device.probe_latency import ort_op_profile
from edgeprune.formats.onnx.export import export_fp32
from edgeprune.manifest import scratch_dir, tool_versions
from edgeprune.models.checkpoint import build_from_yaml
from edgeprune.pruning.heads import halving
from edgeprune.pruning.structured import PruneConfig, prune
from benchmarks.report import publish

ATTENTION = "/attn/"


def attention_ms(nodes: dict[str, float]) -> tuple[float, float]:
    """(all attention nodes, those that are not convolutions) in ms: the second is what channel pruning keeps."""
    inside = {name: ms for name, ms in nodes.items() if ATTENTION in name}
    return sum(inside.values()), sum(ms for name, ms in inside.items() if "/conv/" not in name)


def profile(path: Path, imgsz: int, threads: int, runs: int) -> dict:
    shape = (1, 3, imgsz, imgsz)
    ops = ort_op_profile(path, threads, shape, runs)
    nodes = ort_op_profile(path, threads, shape, runs, by="node")
    total, node_total = sum(ops.values()), sum(nodes.values())  # two profiles: shares are within the node one
    attn, untouched = attention_ms(nodes)
    return {"total_ms": round(total, 3), "ops_ms": ops, "attention_ms": round(attn, 4),
            "attention_share": round(attn / node_total, 4) if node_total else 0.0,
            "attention_not_conv_share": round(untouched / node_total, 4) if node_total else 0.0}


def run(models, imgsizes, goals, threads: int = 2, runs: int = 20, heads: bool = False, nc: int = 80) -> dict:
    rows = []
    with scratch_dir("benchops") as tmp:
        for spec in models:
            torch.manual_seed(0)
            model = build_from_yaml(spec, nc).eval()
            for imgsz in imgsizes:
                halved = halving(model) if heads else ()
                variants = {0.0: model}
                for goal in goals:
                    cfg = PruneConfig(flops_reduction=goal, imgsz=imgsz, attention_heads=heads, overrides=halved)
                    variants[goal] = prune(model, cfg)[0]
                base = None
                for goal, variant in variants.items():
                    path = export_fp32(variant, imgsz, Path(tmp) / f"{Path(spec).stem}-{imgsz}-{goal}.onnx")
                    row = {"model": spec, "imgsz": imgsz, "flops_goal": goal, "heads": heads and goal > 0,
                           **profile(path, imgsz, threads, runs)}
                    base = base or row
                    row["op_ratio"] = {op: round(ms / base["ops_ms"][op], 3) for op, ms in row["ops_ms"].items()
                                       if base["ops_ms"].get(op, 0) > 0}
                    row["total_ratio"] = round(row["total_ms"] / base["total_ms"], 3)
                    rows.append(row)
                    print({k: v for k, v in row.items() if k not in ("ops_ms", "op_ratio")}, flush=True)
    return {"threads": threads, "runs": runs, "rows": rows, "tools": tool_versions()}


def markdown(result: dict, top: int = 8) -> str:
    lines = [f"# Where ONNX Runtime's time goes — FP32, {result['threads']} threads, {result['runs']} profiled runs", "",
             "| model | px | FLOPs goal | heads halved | total ms | ratio | attention share | attention, not conv |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['imgsz']} | {r['flops_goal']:.0%} | {'yes' if r['heads'] else 'no'} | "
                     f"{r['total_ms']:.2f} | {r['total_ratio']:.2f} | {r['attention_share']:.1%} | "
                     f"{r['attention_not_conv_share']:.1%} |")
    lines += ["", f"Per operator type (the {top} slowest of each unpruned model), pruned / unpruned ms:", "",
              "| model | px | FLOPs goal | op | ms | ratio |", "|---|---|---|---|---|---|"]
    for r in (r for r in result["rows"] if r["flops_goal"] > 0):
        base = next(b for b in result["rows"] if b["model"] == r["model"] and b["imgsz"] == r["imgsz"]
                    and b["flops_goal"] == 0)
        for op in list(base["ops_ms"])[:top]:
            lines.append(f"| {r['model']} | {r['imgsz']} | {r['flops_goal']:.0%} | {op} | "
                         f"{base['ops_ms'][op]:.2f} → {r['ops_ms'].get(op, 0.0):.2f} | {r['op_ratio'].get(op, 0.0):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["yolo26n.yaml", "yolo11n.yaml"])
    parser.add_argument("--imgsz", nargs="*", type=int, default=[640, 256])
    parser.add_argument("--goals", nargs="*", type=float, default=[0.5], help="FLOPs-reduction goals")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="profiled runs per model (after one warm-up)")
    parser.add_argument("--heads", action="store_true", help="pruned models also drop half of every attention "
                        "block's heads")
    parser.add_argument("--out", default="bench/ops")
    args = parser.parse_args(argv)
    result = run(args.models, args.imgsz, args.goals, args.threads, args.runs, args.heads)
    publish(Path(args.out), "ops", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
