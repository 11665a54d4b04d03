"""A cheap accuracy proxy for ranking compression candidates before any of them is fully fine-tuned.

Adaptive batch-norm (EagleEye, Li et al. 2020): a pruned network's BN statistics are those of the
unpruned one and misjudge it; re-estimating them on a few hundred training images, then evaluating
on a slice of the validation set, ranks pruned candidates of one input size much as their fine-tuned
accuracy does. Across input sizes it does not: a heavily pruned model at the full size looks far worse
before training than it ends up, while the unpruned model at a smaller size is already what it will be
(measured: README, "Latency budget"). So by default every candidate is first fine-tuned a short while
(`proxy_epochs`, NetAdapt's short-term fine-tune), then BN-recalibrated and evaluated the same way.
Every candidate, the unpruned one included, gets the same treatment so they compare.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.data.dataset import Dataset
from edgeprune.evaluation.detection import evaluate, torch_runner
from edgeprune.manifest import scratch_dir

NAME = "adaptive-BN mAP50-95 (BN statistics re-estimated on train images, then a val slice)"


def name(epochs: int) -> str:
    return NAME if epochs <= 0 else f"mAP50-95 on a val slice after a {epochs}-epoch fine-tune (then adaptive BN)"


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


def proxy_map(model: nn.Module, dataset: Dataset, imgsz: int, images: np.ndarray, val_images: int,
              epochs: int = 0, work_dir: Path | None = None) -> float:
    """The candidate's proxy accuracy; with `epochs` > 0 it is fine-tuned that long first (in a scratch folder)."""
    if epochs > 0:
        from edgeprune.training.trainer import finetune_recipe, train

        if work_dir is not None:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
        with scratch_dir("proxy", dir=work_dir) as tmp:
            model = train(deepcopy(model), dataset, finetune_recipe(epochs, imgsz), Path(tmp))
    calibrated = recalibrate_bn(model, images)
    return float(evaluate(torch_runner(calibrated), dataset, imgsz, desc=f"proxy {imgsz}px", limit=val_images)["map50_95"])
