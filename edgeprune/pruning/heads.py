"""Whole-head pruning of Ultralytics' attention blocks (C2PSA / PSA in YOLO11, YOLO26).

Channel pruning cannot reach inside an attention block: its query/key/value convolution is reshaped by
head count, so its channels only come and go a head at a time. A head is one unit here: its rows of
`qkv` (query + key + value), its value channels in the depthwise positional conv `pe`, and the same
input columns of `proj`. `proj` still writes the block's full width, so the residual around the block
and everything outside it are untouched. The block becomes `HeadPrunedAttention` (the only change is
where its value width is read from), which is why this is opt-in: a pruned checkpoint with dropped
heads needs edgeprune importable to load (`recipe.prune.attention_heads`, `--heads`).
"""

from __future__ import annotations

import torch
from torch import nn
import edgeprune.env  # noqa: F401, I001  (Ultralytics offline settings before it is imported)
from ultralytics.nn.modules.block import Attention

from edgeprune.models.attention import HeadPrunedAttention


def attention_blocks(model: nn.Module) -> dict[str, Attention]:
    """Attention blocks whose heads can be dropped: name -> module (AAttn and others stay locked)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, Attention)}


def halving(model: nn.Module) -> tuple[tuple[str, float], ...]:
    """PruneConfig overrides that drop half of every attention block's heads (benchmarks compare at fixed heads)."""
    return tuple((name, 0.5) for name in attention_blocks(model))


def _head_rows(module: Attention, head: int) -> slice:
    width = 2 * module.key_dim + module.head_dim
    return slice(head * width, (head + 1) * width)


def _value_channels(module: Attention, head: int) -> slice:
    return slice(head * module.head_dim, (head + 1) * module.head_dim)


def _weights(module: Attention, head: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(weight, grad) of the head's share of each of its three convs."""
    rows, values = _head_rows(module, head), _value_channels(module, head)
    parts = [(module.qkv.conv, (rows,)), (module.pe.conv, (values,)), (module.proj.conv, (slice(None), values))]
    return [(conv.weight[index], None if conv.weight.grad is None else conv.weight.grad[index]) for conv, index in parts]


def _bn_scales(module: Attention, head: int) -> list[torch.Tensor]:
    return [module.qkv.bn.weight[_head_rows(module, head)], module.pe.bn.weight[_value_channels(module, head)]]


def _head_score(module: Attention, head: int, criterion: str) -> float:
    """The criterion's score of one head, averaged over the layers it spans (as Torch-Pruning reduces a group)."""
    if criterion == "bn":
        return float(torch.stack([s.abs().sum() for s in _bn_scales(module, head)]).mean())
    per_layer = []
    for weight, grad in _weights(module, head):
        if criterion == "taylor":
            if grad is None:
                raise RuntimeError("taylor head scores need loss gradients accumulated first")
            per_layer.append((weight * grad).abs().sum())
        else:
            per_layer.append(weight.abs().pow(1 if criterion == "l1" else 2).sum())
    return float(torch.stack(per_layer).mean())


def score_heads(module: Attention, criterion: str) -> torch.Tensor:
    """One score per head (raw: the criterion's own scale)."""
    if criterion == "random":
        return torch.rand(module.num_heads)
    with torch.no_grad():
        return torch.tensor([_head_score(module, h, criterion) for h in range(module.num_heads)])


def head_effects(name: str, module: Attention) -> list[tuple[str, str, int]]:
    """(conv, "out" | "in", channels it loses per head): what a latency cost reads."""
    per_head_rows = 2 * module.key_dim + module.head_dim
    return [(f"{name}.qkv.conv", "out", per_head_rows), (f"{name}.pe.conv", "out", module.head_dim),
            (f"{name}.pe.conv", "in", module.head_dim), (f"{name}.proj.conv", "in", module.head_dim)]


def _indices(module: Attention, keep: list[int], of) -> list[int]:
    return [i for h in keep for i in range(of(module, h).start, of(module, h).stop)]


def _narrow_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    for attr in ("weight", "bias"):
        setattr(bn, attr, nn.Parameter(getattr(bn, attr).data[idx].clone()))
    bn.running_mean = bn.running_mean[idx].clone()
    bn.running_var = bn.running_var[idx].clone()
    bn.num_features = len(idx)


def _narrow_conv(conv: nn.Conv2d, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None) -> None:
    weight = conv.weight.data
    if out_idx is not None:
        weight = weight[out_idx]
        conv.out_channels = len(out_idx)
        if conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias.data[out_idx].clone())
    if in_idx is not None:
        weight = weight[:, in_idx]
        conv.in_channels = len(in_idx)
    conv.weight = nn.Parameter(weight.clone())


def drop_heads(module: Attention, keep: list[int], name: str = "") -> dict[str, list[int]]:
    """Keep only the heads `keep` of `module`, in place; returns the kept output channels of its qkv and pe convs
    (`name`-prefixed), the form a kept-channel record stores."""
    keep = sorted(set(keep))
    if not keep or keep[-1] >= module.num_heads:
        raise ValueError(f"cannot keep heads {keep} of an attention block with {module.num_heads}")
    rows = torch.tensor(_indices(module, keep, _head_rows))
    values = torch.tensor(_indices(module, keep, _value_channels))
    _narrow_conv(module.qkv.conv, out_idx=rows)
    _narrow_bn(module.qkv.bn, rows)
    _narrow_conv(module.pe.conv, out_idx=values)  # depthwise: one input channel per group
    module.pe.conv.in_channels = module.pe.conv.groups = len(values)
    _narrow_bn(module.pe.bn, values)
    _narrow_conv(module.proj.conv, in_idx=values)
    module.num_heads = len(keep)
    module.__class__ = HeadPrunedAttention
    prefix = f"{name}." if name else ""
    return {f"{prefix}qkv.conv": rows.tolist(), f"{prefix}pe.conv": values.tolist()}


def compose(first: dict[str, dict], then: dict[str, dict]) -> dict[str, dict]:
    """Kept heads of the original blocks after two prunings (`then` indexes the once-pruned block's heads)."""
    out = dict(first)
    for name, entry in then.items():
        earlier = first.get(name)
        out[name] = dict(entry) if earlier is None else {
            "heads": earlier["heads"], "kept": [earlier["kept"][i] for i in entry["kept"]]}
    return out


__all__ = ["attention_blocks", "compose", "drop_heads", "halving", "head_effects", "score_heads"]
