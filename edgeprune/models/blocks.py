"""Make Ultralytics' split blocks prunable, then put them back as the original classes.

C2f, C3k2, C2PSA, PSA, RepNCSPELAN4 … split their first conv's output with `chunk(2)` or
`split((c, c))`. Torch-Pruning's index mapping through those ops is wrong with current PyTorch,
and the code needs both halves equally wide anyway. So for pruning, each such `cv1` becomes two
convs (`cv1a`, `cv1b`: same outputs) with an instance-level forward that uses them; after pruning,
the two are concatenated back into one `cv1` and the instance forward is dropped. Pruning keeps
both halves equally wide, so the original class (and its chunk) works unchanged: the pruned model
is made only of Ultralytics classes and loads with plain `YOLO(path)`, no edgeprune import needed.
"""

from __future__ import annotations

import types
from copy import deepcopy

import torch
from torch import nn
import edgeprune.env  # noqa: F401, I001  (Ultralytics offline settings before it is imported)
from ultralytics.nn.modules import block as B


def _c2f_forward(self, x):
    y = [self.cv1a(x), self.cv1b(x)]
    y.extend(m(y[-1]) for m in self.m)
    return self.cv2(torch.cat(y, 1))


def _elan_forward(self, x):
    y = [self.cv1a(x), self.cv1b(x)]
    y.extend(m(y[-1]) for m in [self.cv2, self.cv3])
    return self.cv4(torch.cat(y, 1))


def _c2_forward(self, x):
    a, b = self.cv1a(x), self.cv1b(x)
    return self.cv2(torch.cat((self.m(a), b), 1))


def _psa_forward(self, x):
    a, b = self.cv1a(x), self.cv1b(x)
    b = b + self.attn(b)
    b = b + self.ffn(b)
    return self.cv2(torch.cat((a, b), 1))


def _c2psa_forward(self, x):
    a, b = self.cv1a(x), self.cv1b(x)
    return self.cv2(torch.cat((a, self.m(b)), 1))


# Order matters: subclasses before their bases (ELAN1 is a RepNCSPELAN4, C3k2 a C2f).
SPLIT_FORWARDS: tuple[tuple[type, object], ...] = (
    (B.RepNCSPELAN4, _elan_forward),
    (B.C2f, _c2f_forward),  # also C3k2, C2fCIB, C2fPSA
    (B.C2, _c2_forward),
    (B.C2PSA, _c2psa_forward),
    (B.PSA, _psa_forward),
)
HALF_ATTRIBUTE = "c"  # every block above stores the half width in `self.c`


def _split_forward_for(module: nn.Module):
    if isinstance(module, B.C2fAttn):
        return None  # takes a second (guide) input; left intact
    for cls, forward in SPLIT_FORWARDS:
        if isinstance(module, cls):
            return forward
    return None


def _slice_conv(conv_block: nn.Module, start: int, stop: int) -> nn.Module:
    """An Ultralytics Conv (conv + bn + act) computing output channels start:stop of conv_block."""
    half = deepcopy(conv_block)
    half.conv.weight = nn.Parameter(conv_block.conv.weight.data[start:stop].clone())
    half.conv.out_channels = stop - start
    if half.conv.bias is not None:
        half.conv.bias = nn.Parameter(conv_block.conv.bias.data[start:stop].clone())
    bn = half.bn
    bn.weight = nn.Parameter(conv_block.bn.weight.data[start:stop].clone())
    bn.bias = nn.Parameter(conv_block.bn.bias.data[start:stop].clone())
    bn.running_mean = conv_block.bn.running_mean[start:stop].clone()
    bn.running_var = conv_block.bn.running_var[start:stop].clone()
    bn.num_features = stop - start
    return half


def _concat_convs(a: nn.Module, b: nn.Module) -> nn.Module:
    whole = deepcopy(a)
    whole.conv.weight = nn.Parameter(torch.cat([a.conv.weight.data, b.conv.weight.data]))
    whole.conv.out_channels = a.conv.out_channels + b.conv.out_channels
    if a.conv.bias is not None:
        whole.conv.bias = nn.Parameter(torch.cat([a.conv.bias.data, b.conv.bias.data]))
    for name in ("weight", "bias"):
        setattr(whole.bn, name, nn.Parameter(torch.cat([getattr(a.bn, name).data, getattr(b.bn, name).data])))
    whole.bn.running_mean = torch.cat([a.bn.running_mean, b.bn.running_mean])
    whole.bn.running_var = torch.cat([a.bn.running_var, b.bn.running_var])
    whole.bn.num_features = whole.conv.out_channels
    return whole


def unfuse_split_blocks(model: nn.Module) -> list[nn.Module]:
    """Give every split block two half convs in place of `cv1`; returns the blocks changed."""
    changed = []
    for module in model.modules():
        forward = _split_forward_for(module)
        if forward is None or not hasattr(module.cv1, "bn"):
            continue
        half = module.cv1.conv.out_channels // 2
        module.cv1a = _slice_conv(module.cv1, 0, half)
        module.cv1b = _slice_conv(module.cv1, half, 2 * half)
        module.cv1a.train(module.training), module.cv1b.train(module.training)
        del module.cv1
        module.forward = types.MethodType(forward, module)
        changed.append(module)
    return changed


def refuse_split_blocks(model: nn.Module) -> None:
    """Undo `unfuse_split_blocks`: one `cv1` again, the class's own forward, `c` updated."""
    for module in model.modules():
        if not hasattr(module, "cv1a"):
            continue
        a, b = module.cv1a, module.cv1b
        if a.conv.out_channels != b.conv.out_channels:
            raise RuntimeError(f"{type(module).__name__} halves differ ({a.conv.out_channels} vs "
                               f"{b.conv.out_channels}); the split block cannot be restored")
        module.cv1 = _concat_convs(a, b)
        module.cv1.train(module.training)
        del module.cv1a, module.cv1b
        del module.forward  # back to the class's forward
        setattr(module, HALF_ATTRIBUTE, a.conv.out_channels)


def split_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """The (cv1a.conv, cv1b.conv) pairs that must keep equally many channels."""
    return [(m.cv1a.conv, m.cv1b.conv) for m in model.modules() if hasattr(m, "cv1a")]


def head_twins(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """Corresponding convs of an end-to-end head's one-to-many and one-to-one branches (YOLO26): pruned as one
    unit, so the branch trained beside the deployed one keeps its shape, and the importance both branches give
    a channel decides it."""
    head = model.model[-1]
    pairs = []
    for many, one in (("cv2", "one2one_cv2"), ("cv3", "one2one_cv3")):
        if getattr(head, one, None) is None or getattr(head, many, None) is None:
            continue
        convs = [[c for c in branch.modules() if isinstance(c, nn.Conv2d)] for branch in (getattr(head, many),
                                                                                           getattr(head, one))]
        pairs += list(zip(*convs))
    return pairs
