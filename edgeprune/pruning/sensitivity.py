"""Per-block pruning sensitivity: prune one block at a time (no fine-tuning) and measure the mAP lost.

Blocks whose mAP collapses when thinned deserve a smaller ratio; `suggest_overrides` turns the
scan into per-block ratios for PruneConfig.overrides (robust blocks are pruned harder).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from edgeprune.data.dataset import Dataset
from edgeprune.evaluation.detection import evaluate, torch_runner
from edgeprune.manifest import atomic_write_bytes
from edgeprune.pruning.structured import PruneConfig, prune_at_ratio


def scan(model: torch.nn.Module, dataset: Dataset, cfg: PruneConfig, ratio: float = 0.5,
         limit: int | None = 64) -> dict[str, float]:
    """{'model.i.': mAP50-95 drop} for every top-level block with prunable channels."""
    base = evaluate(torch_runner(model), dataset, cfg.imgsz, desc="sensitivity: unpruned", limit=limit)["map50_95"]
    drops = {}
    for index in range(len(model.model) - 1):  # the head's outputs are locked anyway
        prefix = f"model.{index}."
        only_this = replace(cfg, overrides=((prefix, ratio), ("model.", 0.0)))
        pruned, result = prune_at_ratio(model, 0.0, only_this)
        if result.macs_after == result.macs_before:
            continue  # nothing prunable in this block (e.g. Upsample, Concat, locked attention)
        score = evaluate(torch_runner(pruned), dataset, cfg.imgsz, desc=f"sensitivity: {prefix}", limit=limit)
        drops[prefix] = round(base - score["map50_95"], 4)
    return drops


def suggest_overrides(drops: dict[str, float], ratio: float, spread: float = 0.5) -> tuple[tuple[str, float], ...]:
    """Scale each block's ratio between ratio*(1-spread) (most sensitive) and ratio*(1+spread) (least)."""
    if not drops:
        return ()
    lo, hi = min(drops.values()), max(drops.values())
    span = (hi - lo) or 1.0
    return tuple((prefix, round(min(0.9, ratio * (1 + spread - 2 * spread * (d - lo) / span)), 3))
                 for prefix, d in drops.items())


def plot(drops: dict[str, float], out: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.bar([p.rstrip(".") for p in drops], list(drops.values()), color="tab:red")
    ax.set_ylabel("mAP50-95 lost")
    ax.set_title("pruning sensitivity per block (each block alone, no fine-tuning)")
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())
