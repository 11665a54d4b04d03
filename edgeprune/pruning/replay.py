"""Record which output channels each conv kept, and rebuild a pruned model from the original weights.

The record is data, not code: for every conv whose width changed, its original width and the kept
output-channel indices into the ORIGINAL conv (for a split block's `cv1`, into its whole, concatenated
output). `replay(original, record)` re-applies exactly that cut with Torch-Pruning's dependency graph
(which also trims BatchNorm and every consumer's input channels), so a pruning can be audited,
re-applied to re-trained original weights, or checked without shipping the pruned checkpoint.

Attention blocks that lost whole heads (pruning.heads) are recorded by block: its original head count
and the kept heads; replay drops those heads after the channel cuts (their qkv/pe conv entries are the
heads' channels, listed so every changed conv is in the record).

Indices are stored as compact runs ("0-5,8,10-15") to keep record.json small.
"""

from __future__ import annotations

from copy import deepcopy

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.models.blocks import refuse_split_blocks, unfuse_split_blocks
from edgeprune.pruning.graph import dependency_graph
from edgeprune.pruning.heads import drop_heads

FORMAT = "edgeprune-kept-channels/1"


def encode_runs(indices: list[int]) -> str:
    """Sorted indices -> "0-5,8,10-15"."""
    runs, start, prev = [], None, None
    for i in sorted(indices):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            runs.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = prev = i
    if start is not None:
        runs.append(f"{start}-{prev}" if prev > start else f"{start}")
    return ",".join(runs)


def decode_runs(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def make_record(kept: dict[str, list[int]], widths: dict[str, int], imgsz: int,
                heads: dict[str, dict] | None = None) -> dict:
    """The JSON-ready record: conv name -> original width and kept output channels (+ attention heads kept)."""
    record = {"format": FORMAT, "imgsz": imgsz,
              "convs": {name: {"channels": widths[name], "keep": encode_runs(idxs)} for name, idxs in kept.items()}}
    if heads:
        record["heads"] = {name: {"heads": e["heads"], "keep": encode_runs(e["kept"])} for name, e in heads.items()}
    return record


def _apply_heads(model: nn.Module, heads: dict[str, dict]) -> None:
    for name, entry in heads.items():
        try:
            block = model.get_submodule(name)
        except AttributeError:
            block = None
        if getattr(block, "num_heads", None) != entry["heads"]:
            raise EdgepruneError(f"the record drops heads of {name}, which the original model does not have with "
                                 f"{entry['heads']} heads", "replay onto the same architecture the record was made from")
        drop_heads(block, decode_runs(entry["keep"]), name)


def split_kept(unfused_kept: dict[str, list[int]], unfused_widths: dict[str, int],
               split_names: list[str]) -> dict[str, list[int]]:
    """Map kept channels of split halves (P.cv1a.conv, P.cv1b.conv) onto the restored P.cv1.conv."""
    kept = dict(unfused_kept)
    for prefix in split_names:
        a, b = f"{prefix}.cv1a.conv", f"{prefix}.cv1b.conv"
        if a not in kept and b not in kept:
            continue
        half = unfused_widths[a]
        ka = kept.pop(a, list(range(half)))
        kb = kept.pop(b, list(range(unfused_widths[b])))
        kept[f"{prefix}.cv1.conv"] = list(ka) + [half + i for i in kb]
    return kept


def _unfused_targets(name: str, channels: int, keep: list[int], split_names: set[str]):
    """(conv name in the unfused model, its original width, kept indices) for one record entry."""
    prefix = name.removesuffix(".cv1.conv")
    if name.endswith(".cv1.conv") and prefix in split_names:
        half = channels // 2
        yield f"{prefix}.cv1a.conv", half, [i for i in keep if i < half]
        yield f"{prefix}.cv1b.conv", half, [i - half for i in keep if i >= half]
    else:
        yield name, channels, keep


def replay(original: nn.Module, record: dict) -> nn.Module:
    """Rebuild the pruned model from `original` (unpruned weights) and a record from `make_record`."""
    if record.get("format") != FORMAT:
        raise EdgepruneError(f"not an edgeprune kept-channel record (format {record.get('format')!r})",
                             f"pass the 'kept_channels' entry of a prune record.json ({FORMAT})")
    model = deepcopy(original).float().eval()
    split_modules = unfuse_split_blocks(model)
    names = {m: n for n, m in model.named_modules()}
    split_names = {names[m] for m in split_modules}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    example = torch.zeros(1, 3, record["imgsz"], record["imgsz"])
    graph = dependency_graph(model, example)
    heads = record.get("heads", {})
    for name, entry in record["convs"].items():
        if any(name.startswith(f"{block}.") for block in heads):
            continue  # a head's channels: dropped with the head below
        keep_all = decode_runs(entry["keep"])
        for target, channels, keep in _unfused_targets(name, entry["channels"], keep_all, split_names):
            conv = convs.get(target)
            if conv is None:
                raise EdgepruneError(f"the record names conv {name}, which the original model does not have",
                                     "replay onto the same architecture the record was made from")
            if conv.out_channels == len(keep):
                continue  # already cut as part of an earlier conv's group (coupled channels)
            if conv.out_channels != channels:
                raise EdgepruneError(f"{name} has {conv.out_channels} output channels, the record expects {channels}",
                                     "replay onto the unpruned model the record was made from")
            pruned = sorted(set(range(channels)) - set(keep))
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, pruned).prune()
    refuse_split_blocks(model)
    _apply_heads(model, heads)
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    for name, entry in record["convs"].items():
        if widths.get(name) != len(decode_runs(entry["keep"])):
            raise RuntimeError(f"replay left {name} with {widths.get(name)} channels, the record keeps "
                               f"{len(decode_runs(entry['keep']))}")
    return model
