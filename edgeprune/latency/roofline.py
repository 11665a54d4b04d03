"""Estimated device latency from the profile's hardware facts, until measured device numbers arrive.

A roofline: the slower of compute (operations over the achievable fraction of peak throughput)
and memory traffic (weights read once, every conv activation written and read once, over
bandwidth), plus a fixed per-inference overhead. Always labelled an estimate; small batch-1
detectors reach a small fraction of peak: each format declares its utilisation and overhead.
"""

from __future__ import annotations

from torch import nn

from edgeprune import formats
from edgeprune.targets import Target

BYTES = {"int8": 1, "fp16": 2, "fp32": 4}


def activation_elements(model: nn.Module, imgsz: int) -> int:
    """Elements written by every convolution for one image (the dominant activation traffic)."""
    from edgeprune.latency.features import STRIDES, latency_features

    features = latency_features(model, imgsz)
    return int(round(sum(features[f"mact_s{s}"] for s in STRIDES) * 1e6))


def estimate_latency_ms(gflops: float, params: int, activations: int, target: Target) -> dict:
    hw = target.device.hardware
    width = BYTES[target.recipe.precision]
    peak = (hw.peak_int8_tops * 1e12 if target.recipe.precision == "int8" else hw.peak_fp16_tflops * 1e12)
    caps = formats.for_runtime(target.device.runtime).caps
    utilisation = caps.roofline_utilisation
    compute_ms = gflops * 1e9 / (peak * utilisation) * 1e3 if peak else float("nan")
    traffic = params * width + 2 * activations * width
    memory_ms = traffic / (hw.memory_bandwidth_gbs * 1e9) * 1e3 if hw.memory_bandwidth_gbs else float("nan")
    total = max(compute_ms, memory_ms) + caps.roofline_overhead_ms
    return {"estimate_ms": round(total, 3), "compute_ms": round(compute_ms, 3), "memory_ms": round(memory_ms, 3),
            "bound": "compute" if compute_ms >= memory_ms else "memory", "utilisation_assumed": utilisation,
            "device": hw.device, "label": "estimate (roofline), not a measurement"}
