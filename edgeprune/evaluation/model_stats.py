"""Size and compute of a PyTorch detector: parameters and GFLOPs (2 x MACs) at a given input size."""

from __future__ import annotations

import torch

from edgeprune.pruning.structured import count_macs


def model_stats(model: torch.nn.Module, imgsz: int) -> dict[str, float]:
    macs, params = count_macs(model, imgsz)
    return {"params": params, "gflops": round(2 * macs / 1e9, 4), "imgsz": imgsz}
