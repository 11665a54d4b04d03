"""What a latency model reads from a network: compute and memory traffic per feature-map resolution.

Pruning changes channel counts, the input size changes every map's area; both move these numbers, and
the fixed costs that do not shrink with pruning (the head's decoding, per-op dispatch) appear as the
anchor count and the constant. Counted with forward hooks on the real module, so any Ultralytics
family (and any pruned variant of it) is described the same way.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from edgeprune.models.checkpoint import unused_head_branch

STRIDES = (2, 4, 8, 16, 32)
HEAD_STRIDES = (8, 16, 32)


def feature_names() -> list[str]:
    return (["const"] + [f"gmacs_s{s}" for s in STRIDES] + [f"mact_s{s}" for s in STRIDES]
            + ["head_outputs_m"])


def deployed_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The convolutions the exported graph runs (not those of the head branch the export drops)."""
    head = model.model[-1]
    unused = {m for name in unused_head_branch(model) for m in getattr(head, name).modules()}
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m not in unused]


def nearest_stride(imgsz: int, height: int) -> int:
    """The stride bucket a feature map of `height` rows belongs to at input size `imgsz`."""
    return min(STRIDES, key=lambda s: abs(s - imgsz / height))


def trace_deployed_convs(model: nn.Module, imgsz: int, on_conv: Callable[[nn.Conv2d, torch.Tensor], None]) -> None:
    """One zero image through `model` at `imgsz`, calling on_conv(conv, output) for every deployed conv."""
    handles = [m.register_forward_hook(lambda conv, _inputs, output: on_conv(conv, output))
               for m in deployed_convs(model)]
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 3, imgsz, imgsz))
    finally:
        for handle in handles:
            handle.remove()


def conv_gmacs(conv: nn.Conv2d, output: torch.Tensor) -> float:
    """GMACs of one convolution that wrote `output` (batch 1)."""
    _, cout, h, w = output.shape
    kh, kw = conv.kernel_size
    return h * w * cout * kh * kw * conv.in_channels / conv.groups / 1e9


PARTS = ("backbone", "neck", "head")


def macs_by_part(model: nn.Module, imgsz: int) -> dict[str, float]:
    """GMACs of the deployed convolutions in the backbone (the yaml's `backbone` layers), the neck and the detect
    head. Where a FLOPs cut falls says more than its total: a backbone channel feeds everything after it."""
    backbone, head = len(model.yaml["backbone"]), len(model.model) - 1
    layer = {conv: int(name.split(".")[1]) for name, conv in model.named_modules() if isinstance(conv, nn.Conv2d)}
    totals = dict.fromkeys(PARTS, 0.0)

    def count(conv: nn.Conv2d, output: torch.Tensor) -> None:
        part = "backbone" if layer[conv] < backbone else "head" if layer[conv] == head else "neck"
        totals[part] += conv_gmacs(conv, output)

    trace_deployed_convs(model, imgsz, count)
    return totals


def head_outputs_m(model: nn.Module, imgsz: int) -> float:
    """Millions of values the head decodes: 4 box + nc class values per anchor of its three strides."""
    nc = int(getattr(model.model[-1], "nc", 80))
    return sum((imgsz // s) ** 2 for s in HEAD_STRIDES) * (4 + nc) / 1e6


def latency_features(model: nn.Module, imgsz: int) -> dict[str, float]:
    """Per stride: GMACs of every convolution and millions of elements it writes; the head's output size."""
    macs = {s: 0.0 for s in STRIDES}
    acts = {s: 0.0 for s in STRIDES}

    def count(conv: nn.Conv2d, output: torch.Tensor) -> None:
        stride = nearest_stride(imgsz, output.shape[2])
        macs[stride] += conv_gmacs(conv, output)
        acts[stride] += output.numel() / 1e6

    trace_deployed_convs(model, imgsz, count)
    return {"const": 1.0, **{f"gmacs_s{s}": round(macs[s], 6) for s in STRIDES},
            **{f"mact_s{s}": round(acts[s], 6) for s in STRIDES},
            "head_outputs_m": round(head_outputs_m(model, imgsz), 6)}
