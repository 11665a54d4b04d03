"""The exact network every exporter converts: fused, in export mode, boxes scaled to 0..1.

Ultralytics' head emits box coordinates in input pixels (0..imgsz) concatenated with class
scores (0..1). Quantized to one int8 scale, the scores would keep a handful of levels and
collapse. Dividing boxes by the input size puts both on 0..1, so one scale serves both; the
output layout is recorded in the bundle metadata and undone by `denormalize`.
"""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import torch
from torch import nn
import edgeprune.env  # noqa: F401, I001  (Ultralytics offline settings before it is imported)
from ultralytics.nn.modules.block import DFL


class DeployGraph(nn.Module):
    """(B, 3, S, S) float 0..1 -> (B, 4 + nc, anchors): xywh/S and class scores; or (B, k, 6) end-to-end."""

    def __init__(self, model: nn.Module, imgsz: int):
        super().__init__()
        self.model = model
        self.imgsz = imgsz
        self.end2end = bool(getattr(model.model[-1], "end2end", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        if self.end2end:
            return torch.cat([y[..., :4] / self.imgsz, y[..., 4:]], -1)
        return torch.cat([y[:, :4] / self.imgsz, y[:, 4:]], 1)


class LastAxisDFL(nn.Module):
    """Ultralytics' DFL integral with its softmax over the last axis: the same numbers, on every
    runtime's fast path. Ultralytics' axis-1 softmax over (B, 16, 4, A) cost ONNX Runtime ~10 ms at
    640 px (a tenth of a pruned yolo11n, and it does not shrink with pruning)."""

    def __init__(self, dfl: nn.Module):
        super().__init__()
        self.c1 = dfl.c1
        self.register_buffer("bins", dfl.conv.weight.detach().reshape(self.c1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return (x.view(b, 4, self.c1, a).transpose(2, 3).softmax(-1) @ self.bins).view(b, 4, a)


def deploy_graph(model: nn.Module, imgsz: int) -> DeployGraph:
    model = deepcopy(model).float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model = model.fuse(verbose=False) if hasattr(model, "fuse") else model
    head = model.model[-1]
    head.export, head.format, head.dynamic = True, "edgeprune", False
    if isinstance(getattr(head, "dfl", None), DFL):  # reg_max 1 (YOLO26) has an Identity instead
        head.dfl = LastAxisDFL(head.dfl)
    return DeployGraph(model, imgsz).eval()


def denormalize(raw: np.ndarray, imgsz: int, end2end: bool = False) -> np.ndarray:
    """Undo DeployGraph's box scaling so `evaluate.detection.decode` sees input pixels."""
    out = np.array(raw, dtype=np.float32, copy=True)
    if end2end:
        out[..., :4] *= imgsz
    else:
        out[:, :4] *= imgsz
    return out
