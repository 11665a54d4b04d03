"""Latency of a width plan without building it: the latency model's features counted from conv shapes.

A conv census (one forward pass of the split-block model) records every convolution's kernel, groups,
channels and output area. A plan's features (edgeprune.latency.features) are then sums over convs of
what each computes and writes at its planned widths, so the knapsack can price a channel step of any
group in microseconds. `Predictor` turns features into milliseconds at the budget's percentile, from a
measured latency model or, labelled, from the profile's roofline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from edgeprune.latency.features import STRIDES, feature_names, head_outputs_m, nearest_stride, trace_deployed_convs
from edgeprune.latency.model import LatencyModel, check_matches, predict
from edgeprune.latency.roofline import estimate_latency_ms
from edgeprune.targets import Target


@dataclass(frozen=True)
class ConvShape:
    area: int  # output height x width
    kernel: int  # kh x kw
    in_channels: int
    out_channels: int
    groups: int
    stride: int  # the feature-map stride bucket it writes at

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels


@dataclass
class Census:
    imgsz: int
    convs: dict[str, ConvShape]
    head_outputs_m: float

    def contribution(self, name: str, cin: int, cout: int) -> tuple[float, float, float]:
        """(GMACs, M elements written, params) of one conv at these widths."""
        c = self.convs[name]
        per_group = 1 if c.depthwise else cin / c.groups
        return (c.area * cout * c.kernel * per_group / 1e9, c.area * cout / 1e6, cout * per_group * c.kernel)

    def features(self, cin: dict[str, int], cout: dict[str, int]) -> dict[str, float]:
        out = {"const": 1.0, **{f"gmacs_s{s}": 0.0 for s in STRIDES}, **{f"mact_s{s}": 0.0 for s in STRIDES},
               "head_outputs_m": self.head_outputs_m, "params": 0.0}
        for name, c in self.convs.items():
            macs, acts, params = self.contribution(name, cin[name], cout[name])
            out[f"gmacs_s{c.stride}"] += macs
            out[f"mact_s{c.stride}"] += acts
            out["params"] += params
        return out

    def widths(self, channels: dict[str, int], keep: dict[str, int],
               effects: dict[str, list[tuple[str, str, int]]]) -> tuple[dict[str, int], dict[str, int]]:
        """Input and output channels of every conv once each group root keeps `keep` of its `channels`."""
        cin = {n: c.in_channels for n, c in self.convs.items()}
        cout = {n: c.out_channels for n, c in self.convs.items()}
        for root, kept in keep.items():
            for conv, side, times in effects.get(root, ()):
                if conv in self.convs:  # a conv outside the deployed graph (an unused head branch) costs nothing
                    (cout if side == "out" else cin)[conv] -= times * (channels[root] - kept)
        return cin, cout


def conv_census(model: nn.Module, imgsz: int) -> Census:
    """Shapes of every conv of `model` (give the split-block form a survey names) at `imgsz`."""
    names = {m: n for n, m in model.named_modules()}
    convs: dict[str, ConvShape] = {}

    def record(conv: nn.Conv2d, output: torch.Tensor) -> None:
        _, _, h, w = output.shape
        convs[names[conv]] = ConvShape(h * w, conv.kernel_size[0] * conv.kernel_size[1], conv.in_channels,
                                       conv.out_channels, conv.groups, nearest_stride(imgsz, h))

    trace_deployed_convs(model, imgsz, record)
    return Census(imgsz, convs, head_outputs_m(model, imgsz))


@dataclass(frozen=True)
class Predictor:
    """Milliseconds at the budget's percentile from latency features; `source` says where the numbers come from."""
    source: str
    percentile: str  # the percentile the budget is checked at, e.g. p90
    measured: bool
    fn: Callable[[dict], float]  # from counted features (the knapsack's fast path)
    module_fn: Callable[[nn.Module, int], float]  # of a real module: the number the report and the export show
    additive: bool = False  # fn is a sum over the features: a step's saving depends only on the convs it touches

    def __call__(self, features: dict) -> float:
        return self.fn(features)

    def scaled(self, factor: float, source: str) -> "Predictor":
        return Predictor(source, self.percentile, self.measured, lambda f: factor * self.fn(f),
                         lambda m, s: factor * self.module_fn(m, s), self.additive)


def percentile_key(model: LatencyModel, percentile: int) -> str:
    """The fitted percentile the budget reads: its own, else the next higher one fitted (never a lower one)."""
    fitted = sorted(int(k[1:]) for k in model.coefficients)
    return f"p{next((p for p in fitted if p >= percentile), fitted[-1])}"


def predictor_for(target: Target, model: LatencyModel | None) -> Predictor:
    """A measured model's prediction when there is one (checked against the target's key), else the roofline."""
    if model is not None:
        check_matches(model, target)
        key = percentile_key(model, target.budget.percentile)
        coef = dict(zip(model.feature_names, model.coefficients[key]))
        return Predictor(model.source, key, True, lambda f: sum(c * f[n] for n, c in coef.items()),
                         lambda m, s: predict(m, s, target, model)[f"{key}_ms"], additive=True)

    def roofline(features: dict) -> float:
        gmacs = sum(features[f"gmacs_s{s}"] for s in STRIDES)
        acts = sum(features[f"mact_s{s}"] for s in STRIDES) * 1e6
        return estimate_latency_ms(2 * gmacs, int(features["params"]), int(acts), target)["estimate_ms"]

    return Predictor("estimate (roofline), not a measurement", f"p{target.budget.percentile}", False, roofline,
                     lambda m, s: predict(m, s, target, None)["p50_ms"])


__all__ = ["Census", "ConvShape", "Predictor", "conv_census", "feature_names", "predictor_for"]
