"""Quantization-aware fine-tuning: train through simulated INT8 so the weights learn to live with it.

Used when post-training quantization misses the accuracy budget. Every Conv2d of the *training*
model computes with fake-quantized weights (per output channel, symmetric, as every exporter here
quantizes them) and fake-quantized inputs (per tensor; asymmetric for TFLite, symmetric for
TensorRT/ONNX QDQ), with straight-through gradients. Input ranges are running min/max averages.

Only the live training module is patched, after Ultralytics has made its EMA copy: the EMA (what
validation runs and what last.pt/best.pt hold) stays a plain float DetectionModel, so checkpoints
load without edgeprune and the export afterwards calibrates and quantizes as usual — QAT changes
the weights, not the export path. BatchNorm is not folded during QAT (the exporters fold it), a
common simplification that leaves a small train/deploy mismatch.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

MOMENTUM = 0.05  # running-range update per training step
ATTR = "_edgeprune_qat"


class _Range:
    """Running min/max of a conv's input, the range a calibrator would later measure."""

    def __init__(self):
        self.low = self.high = None

    def update(self, x: torch.Tensor) -> tuple[float, float]:
        low, high = float(x.detach().min()), float(x.detach().max())
        if self.low is None:
            self.low, self.high = low, high
        else:
            self.low += MOMENTUM * (low - self.low)
            self.high += MOMENTUM * (high - self.high)
        return self.low, self.high


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 in [-127, 127], straight-through gradient."""
    scale = weight.detach().abs().amax(dim=tuple(range(1, weight.dim()))).clamp(min=1e-8) / 127
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)


def fake_quant_input(x: torch.Tensor, low: float, high: float, symmetric: bool) -> torch.Tensor:
    """Per-tensor int8, straight-through gradient; asymmetric ranges always include 0 (as TFLite's do)."""
    if symmetric:
        scale = max(abs(low), abs(high), 1e-8) / 127
        return torch.fake_quantize_per_tensor_affine(x, scale, 0, -127, 127)
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / 255
    zero = int(round(-128 - low / scale))
    return torch.fake_quantize_per_tensor_affine(x, scale, max(-128, min(127, zero)), -128, 127)


def _qat_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    state = getattr(self, ATTR)
    if self.training:
        low, high = state["range"].update(x)
    elif state["range"].low is None:
        return self._conv_forward(x, self.weight, self.bias)
    else:
        low, high = state["range"].low, state["range"].high
    state["calls"] += 1
    x = fake_quant_input(x, low, high, state["symmetric"])
    return F.conv2d(x, fake_quant_weight(self.weight), self.bias, self.stride, self.padding, self.dilation,
                    self.groups)


def attach(model: nn.Module, symmetric: bool) -> int:
    """Patch every Conv2d of `model` (in place) to compute through fake INT8; returns how many were patched."""
    count = 0
    for conv in model.modules():
        # frozen convs (DFL's fixed integral) are left alone: the exporters keep them in float
        if (isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros" and conv.weight.requires_grad
                and not hasattr(conv, ATTR)):
            setattr(conv, ATTR, {"range": _Range(), "symmetric": symmetric, "calls": 0})
            conv.forward = types.MethodType(_qat_forward, conv)
            count += 1
    print(f"QAT: {count} convs compute through fake INT8 ({'symmetric' if symmetric else 'asymmetric'} inputs)")
    return count


def detach(model: nn.Module) -> None:
    """Undo attach(): plain float convs again."""
    for conv in model.modules():
        if hasattr(conv, ATTR):
            delattr(conv, ATTR)
            del conv.forward  # the instance attribute; the class's forward shows through again


def fake_quant_calls(model: nn.Module) -> int:
    """How many conv forwards went through fake INT8 (tests use it to prove QAT was active)."""
    return sum(getattr(m, ATTR)["calls"] for m in model.modules() if hasattr(m, ATTR))
