"""A cheap accuracy proxy for ranking compression candidates before any of them is fine-tuned.

Adaptive batch-norm (EagleEye, Li et al. 2020): a pruned network's BN statistics are those of the
unpruned one and misjudge it; re-estimating them on a few hundred training images, then evaluating
on a slice of the validation set, ranks pruned candidates much as their fine-tuned accuracy does. Every
candidate, the unpruned one included, gets the same treatment so they compare.
"""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import torch
from torch import nn

from edgeprune.data.dataset import Dataset
from edgeprune.evaluation.detection import evaluate, torch_runner

NAME = "adaptive-BN mAP50-95 (BN statistics re-estimated on train images, then a val slice)"


def recalibrate_bn(model: nn.Module, images: np.ndarray, batch: int = 16) -> nn.Module:
    """A copy whose BN running statistics are the plain average over `images`."""
    model = deepcopy(model).float()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            model(torch.from_numpy(images[start:start + batch]))
    return model.eval()


def proxy_map(model: nn.Module, dataset: Dataset, imgsz: int, images: np.ndarray, val_images: int) -> float:
    calibrated = recalibrate_bn(model, images)
    return float(evaluate(torch_runner(calibrated), dataset, imgsz, desc=f"proxy {imgsz}px", limit=val_images)["map50_95"])
