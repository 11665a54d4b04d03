"""Size and compute of a PyTorch detector: parameters and GFLOPs (2 x MACs) at a given input size."""

from __future__ import annotations

import torch


def count_macs(model: torch.nn.Module, imgsz: int) -> tuple[int, int]:
    """(multiply-accumulates, parameters) of one image, counted by Torch-Pruning's op counter."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, imgsz, imgsz))
    return int(macs), int(params)


def model_stats(model: torch.nn.Module, imgsz: int) -> dict[str, float]:
    macs, params = count_macs(model, imgsz)
    return {"params": params, "gflops": round(2 * macs / 1e9, 4), "imgsz": imgsz}
