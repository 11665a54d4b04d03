"""The numbers a report shows, as data: stage rows (PyTorch) and the like-for-like comparison (target runtime)."""

from __future__ import annotations

from pathlib import Path

from edgeprune.targets import Target

STAGE_LABELS = {"baseline": "baseline (PyTorch FP32)", "prune": "pruned, before fine-tuning (PyTorch FP32)",
                "finetune": "pruned + fine-tuned (PyTorch FP32)"}
METRIC = "mAP50-95 (pycocotools COCOeval, val split)"


def report_rows(metrics: dict[str, dict], target: Target, artefact: Path) -> list[dict]:
    """One row per stage; the last is the exported artefact, measured by running it."""
    rows = []
    for stage, m in metrics.items():
        label = STAGE_LABELS.get(stage, f"{target.recipe.precision.upper()} {artefact.name} ({m.get('runtime', '')})")
        last_torch = [r for r in rows if "params" in r]
        rows.append({
            "stage": stage, "label": label, "map50_95": m["map50_95"], "map50": m["map50"],
            "params": m.get("params", last_torch[-1]["params"] if last_torch else 0),
            "gflops": m.get("gflops", last_torch[-1]["gflops"] if last_torch else 0),
            "latency_p50_ms": m["latency"]["p50_ms"], "runtime": m.get("runtime", ""),
            "size_bytes": m.get("size_bytes"),
        })
    return rows


def comparison_rows(reference: dict, compressed: dict, stage_rows: list[dict], target: Target) -> list[dict]:
    """The unpruned baseline and the deployed model, both exported the same way and run in the target's runtime.

    Latency comes from the side-by-side timing (interleaved turns, one process) when this host can run the
    format; the PyTorch FP32 latency of the same model rides along as a secondary, labelled number.
    """
    by_stage = {r["stage"]: r for r in stage_rows}
    torch_row = {"baseline": by_stage["baseline"], "compressed": by_stage.get("finetune", by_stage.get("prune"))}
    timed = reference.get("side_by_side")
    rows = []
    for key, label, m in (("baseline", "unpruned baseline", reference), ("compressed", "deployed (compressed)",
                                                                         compressed)):
        latency = timed["latency"][key] if timed else m["latency"]
        rows.append({
            "key": key, "label": label, "precision": target.recipe.precision, "map50_95": m["map50_95"], "map50": m["map50"],
            "params": torch_row[key]["params"], "gflops": torch_row[key]["gflops"], "size_bytes": m.get("size_bytes"),
            "latency_p50_ms": latency["p50_ms"], "latency_p90_ms": latency.get("p90_ms"),
            "runtime": timed["runtime"] if timed else m.get("runtime", ""), "side_by_side": bool(timed),
            "pytorch_p50_ms": torch_row[key]["latency_p50_ms"],
            "device_estimate": m.get("device_estimate"), "recipe": reference.get("recipe", ""),
        })
    return rows


def speedup(comparison: list[dict]) -> float | None:
    """Baseline latency / compressed latency in the target runtime (> 1: the compressed model is faster)."""
    if len(comparison) < 2 or not comparison[1]["latency_p50_ms"]:
        return None
    return comparison[0]["latency_p50_ms"] / comparison[1]["latency_p50_ms"]
