"""The PyTorch stand-in measured for a CoreML package on a host that cannot run it (off macOS).

Conv weights are fused with BN and rounded to symmetric per-channel int8, exactly the weight
quantization coremltools applies; activations stay float. The mAP it gives is labelled a proxy
in every report: it shows the weight-quantization loss, not the device's arithmetic.
"""

from __future__ import annotations

from copy import deepcopy

import torch
from torch import nn


def int8_weight_proxy(model: nn.Module) -> nn.Module:
    proxy = deepcopy(model).float().eval().fuse(verbose=False)
    with torch.no_grad():
        for conv in (m for m in proxy.modules() if isinstance(m, nn.Conv2d)):
            w = conv.weight
            scale = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12) / 127
            conv.weight.copy_(torch.round(w / scale).clamp(-127, 127) * scale)
    return proxy
