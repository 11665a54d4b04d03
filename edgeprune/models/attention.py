"""An Ultralytics attention block that has lost whole heads.

Ultralytics' `Attention` reshapes its values to the block's input width, which the residual around it
fixes, so it only works while every head is present. After head pruning the values are
`num_heads * head_dim` wide, narrower than the input; this subclass reads that width from its own
attributes instead. Everything else (parameters, names, the CoreML branch, the projection back to the
input width) is the parent's, so exports see the same graph with fewer heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import edgeprune.env  # noqa: F401, I001  (Ultralytics offline settings before it is imported)
from ultralytics.nn.modules.block import Attention


class HeadPrunedAttention(Attention):
    """`Attention` whose value width is its remaining heads', not its input's."""

    @property
    def value_channels(self) -> int:
        return self.num_heads * self.head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n, c = h * w, self.value_channels
        q, k, v = self.qkv(x).view(b, self.num_heads, self.key_dim * 2 + self.head_dim, n).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2)
        if self.format == "coreml" and hasattr(F, "scaled_dot_product_attention"):
            out = F.scaled_dot_product_attention(q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1))
            out = out.transpose(-2, -1).reshape(b, c, h, w)
        else:
            weights = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)
            out = (v @ weights.transpose(-2, -1)).view(b, c, h, w)
        return self.proj(out + self.pe(v.reshape(b, c, h, w)))


__all__ = ["HeadPrunedAttention"]
