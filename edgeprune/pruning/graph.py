"""Torch-Pruning's dependency graph of a model, traced the same way whether or not its weights are frozen.

Torch-Pruning finds layers by following the autograd graph of one forward pass. A checkpoint loaded for
inference has `requires_grad=False` on every weight, so the first layers' outputs carry no `grad_fn` and
those layers are missing from the graph: their channels silently become unprunable (the stem of every
shipped baseline was). Tracing with gradients on, then restoring each flag, gives one graph for both.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(True)
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
