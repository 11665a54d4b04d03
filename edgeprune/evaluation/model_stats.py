"""Size and compute of a PyTorch detector: parameters and GFLOPs (2 x MACs) at a given input size."""

from __future__ import annotations

from copy import deepcopy

import torch

from edgeprune.models.checkpoint import unused_head_branch


def deployed_form(model: torch.nn.Module) -> torch.nn.Module:
    """The network the exporters convert: without the head branch the export drops (models.checkpoint)."""
    unused = unused_head_branch(model) if hasattr(model, "model") else ()
    if not unused:
        return model
    model = deepcopy(model)
    for name in unused:
        setattr(model.model[-1], name, None)
    return model


def count_macs(model: torch.nn.Module, imgsz: int) -> tuple[int, int]:
    """(multiply-accumulates, parameters) of one image of the deployed network, by Torch-Pruning's op counter."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(deployed_form(model), torch.zeros(1, 3, imgsz, imgsz))
    return int(macs), int(params)


def model_stats(model: torch.nn.Module, imgsz: int) -> dict[str, float]:
    macs, params = count_macs(model, imgsz)
    return {"params": params, "gflops": round(2 * macs / 1e9, 4), "imgsz": imgsz}
