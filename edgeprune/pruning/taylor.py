"""Gradients of the real detection loss, for the first-order Taylor criterion.

Taylor importance (Molchanov et al., CVPR 2019) scores a channel by |w * dL/dw|: how much the
loss would change if the channel were removed. The loss is Ultralytics' own (box + cls + DFL, with
the checkpoint's gains, or DEFAULT_CFG's), computed in eval mode so BatchNorm uses its running
statistics, as at inference. The gradients must live on the exact modules that get scored, i.e.
the model after `unfuse_split_blocks`, so this runs on that model in place. An end-to-end head (YOLO26)
is scored by the loss its training ends on, weighted toward the one-to-one branch that deploys.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from edgeprune.errors import EdgepruneError

BATCH_KEYS = ("img", "batch_idx", "cls", "bboxes")


def weigh_toward_deployment(criterion) -> None:
    """Ultralytics' end-to-end loss starts at 0.8 one-to-many and decays that gain to `final_o2m` by the last
    epoch; a fresh criterion would score channels mostly by the one-to-many branch, which the export drops.
    Scored by the final gains, the one-to-one branch (and what feeds it) weighs what it weighs at the end."""
    if hasattr(criterion, "final_o2m"):
        criterion.o2m = criterion.final_o2m
        criterion.o2o = max(criterion.total - criterion.final_o2m, 0.0)


def _hyperparameters(model: nn.Module):
    """model.args as the namespace the loss reads (box/cls/dfl gains): the model's own over DEFAULT_CFG."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.utils import IterableSimpleNamespace

    own = getattr(model, "args", None)
    own = vars(own) if isinstance(own, IterableSimpleNamespace) else dict(own or {})
    return IterableSimpleNamespace(**{**DEFAULT_CFG_DICT, **own})


def accumulate_loss_gradients(model: nn.Module, batches: Iterable[dict]) -> int:
    """Sum d(detection loss)/d(parameter) over `batches` into every parameter's .grad; returns the image count.

    Every parameter ends with a .grad (zeros where the loss does not reach it), requires_grad flags
    and model.args are restored, and no criterion is left on the model.
    """
    saved_args = model.__dict__.get("args", None)
    had_args = "args" in model.__dict__
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.args = _hyperparameters(model)
    images = 0
    try:
        criterion = model.init_criterion()
        weigh_toward_deployment(criterion)
        model.eval()
        for p, _ in flags:
            p.requires_grad_(True)
            p.grad = None
        for batch in batches:
            missing = [k for k in BATCH_KEYS if k not in batch]
            if missing:
                raise EdgepruneError(f"a loss batch lacks {', '.join(missing)}",
                                     "pass Ultralytics-style batches: img, batch_idx, cls, bboxes "
                                     "(edgeprune.data.batches.loss_batches)")
            loss, _ = criterion(model(batch["img"]), batch)
            loss.sum().backward()
            images += len(batch["img"])
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        if had_args:
            model.args = saved_args
        else:
            del model.args
    if images == 0:
        raise EdgepruneError("taylor needs data: the loss batches are empty", "pass --data with train images")
    for p, _ in flags:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    return images


def clear_gradients(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = None
