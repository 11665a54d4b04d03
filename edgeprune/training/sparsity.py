"""Sparsity-inducing training before the cut: an L1 penalty on BatchNorm scales (Network Slimming, Liu et al. 2017;
Torch-Pruning's BNScalePruner regularises the same way).

Channels whose BN scale the penalty drives towards zero carry little signal when the cut comes, so removing
them costs less than removing channels of a network that was never asked to concentrate. Like distillation
(training.distill) the penalty wraps the training model's loss *criterion*, so it never enters a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.errors import EdgepruneError

LOSS_NAME = "sparsity_loss"


class SparsityLoss:
    """Ultralytics criterion protocol: the wrapped loss plus weight x sum |gamma| over the model's BatchNorms."""

    def __init__(self, criterion, norms: list[nn.BatchNorm2d], weight: float):
        self.criterion, self.norms, self.weight = criterion, norms, weight

    def __call__(self, preds, batch: dict):
        loss, items = self.criterion(preds, batch)
        term = sum(bn.weight.abs().sum() for bn in self.norms)
        batch_size = batch["img"].shape[0]  # Ultralytics' loss vector is per-batch sums: scale alike
        loss = torch.cat([loss.reshape(-1), (self.weight * term * batch_size).reshape(1).to(loss.dtype)])
        return loss, {**items, LOSS_NAME: term.detach()}

    def update(self) -> None:
        if hasattr(self.criterion, "update"):
            self.criterion.update()


def attach(model: nn.Module, weight: float) -> SparsityLoss:
    """Make `model.criterion` penalise the L1 norm of every BatchNorm scale (the head's output convs have none)."""
    if weight <= 0:
        raise EdgepruneError(f"sparsity weight {weight} must be > 0", "set TrainConfig.sparsity > 0, or leave it at 0")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.weight is not None]
    base = getattr(model, "criterion", None) or model.init_criterion()
    model.criterion = SparsityLoss(base, norms, weight)
    return model.criterion
