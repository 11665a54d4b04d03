"""Structured channel pruning of YOLO detectors with Torch-Pruning's dependency graph.

Whole output channels (and everything coupled to them: BN, residual adds, concats, the next
layers' inputs) are removed, so the dense model really shrinks. The steps:

1. split blocks get two half convs (models.blocks) so the graph has no chunk/split to mis-map;
2. layers whose channels cannot change are locked: the head's final box/class convs, DFL,
   attention internals (their forward reshapes by head count), and any group still passing
   through a split/slice op; locked blocks are reported by name;
3. every remaining group is scored by an importance criterion and keeps
   round_to-multiples of its channels, the two halves of a split block keeping the same count;
4. a bisection over the uniform ratio reaches the FLOPs goal (rounding makes it jumpy);
5. the halves are concatenated back, leaving only Ultralytics classes.
"""

from __future__ import annotations

import math
from copy import deepcopy
from dataclasses import asdict, dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.models.blocks import refuse_split_blocks, split_pairs, unfuse_split_blocks

CRITERIA = ("l1", "l2", "bn", "random")
SPLIT_LIKE = {tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND, getattr(tp.ops.OPTYPE, "SLICE", "slice")}
ATTENTION_CLASSES = ("Attention", "AAttn")


@dataclass(frozen=True)
class PruneConfig:
    flops_reduction: float = 0.5  # fraction of FLOPs to remove
    criterion: str = "l2"
    round_to: int = 8
    imgsz: int = 256
    min_channels: int = 8
    tolerance: float = 0.02  # accept |achieved - goal| below this (channel rounding makes FLOPs jumpy)
    overrides: tuple[tuple[str, float], ...] = ()  # (module-name prefix, fixed ratio): per-layer ratios
    max_trials: int = 6


@dataclass
class PruneResult:
    ratio: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    layers: dict[str, list[int]]  # conv name -> [out channels before, after]
    locked: dict[str, str]  # module name -> reason it was not pruned
    history: list = field(default_factory=list)  # Torch-Pruning pruning history, for replay

    @property
    def flops_reduction(self) -> float:
        return 1 - self.macs_after / self.macs_before

    def summary(self) -> dict:
        out = asdict(self)
        out["flops_reduction"] = round(self.flops_reduction, 4)
        out.pop("history")
        return out


def _importance(criterion: str):
    if criterion not in CRITERIA:
        raise ValueError(f"unknown pruning criterion {criterion!r}; use one of {CRITERIA}")
    return {"l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
            "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "bn": lambda: tp.importance.BNScaleImportance(),
            "random": lambda: tp.importance.RandomImportance()}[criterion]()


def count_macs(model: nn.Module, imgsz: int) -> tuple[int, int]:
    example = torch.zeros(1, 3, imgsz, imgsz)
    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def _locked_layers(model: nn.Module) -> dict[nn.Module, str]:
    """Convs whose output channels must not change, with the reason."""
    names = {m: n for n, m in model.named_modules()}
    locked: dict[nn.Module, str] = {}
    head = model.model[-1]
    for attr in ("cv2", "cv3", "cv4", "one2one_cv2", "one2one_cv3"):
        for branch in getattr(head, attr, None) or []:
            last = branch[-1] if isinstance(branch, nn.Sequential) else branch
            for conv in (c for c in last.modules() if isinstance(c, nn.Conv2d)):
                locked[conv] = "head output (box/class channels are fixed)"
    for m in head.modules():
        if type(m).__name__ == "DFL":
            for conv in (c for c in m.modules() if isinstance(c, nn.Conv2d)):
                locked[conv] = "DFL (fixed integral)"
    for m in model.modules():
        if type(m).__name__ in ATTENTION_CLASSES:
            for conv in (c for c in m.modules() if isinstance(c, nn.Conv2d)):
                locked[conv] = f"attention in {names[m]} (reshapes by head count)"
    return locked


def _groups(model: nn.Module, example: torch.Tensor):
    """Dependency graph and the prunable groups: root conv -> group (full indices)."""
    locked = _locked_layers(model)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    groups, skipped = {}, {}
    for group in graph.get_all_groups(ignored_layers=list(locked), root_module_types=[nn.Conv2d]):
        root = group[0].dep.target.module
        if any(item.dep.target.type in SPLIT_LIKE for item in group.items):
            skipped[root] = "group passes through a split/slice that edgeprune does not rewrite"
            continue
        groups[root] = group
    return graph, groups, locked, skipped


def _out_convs(group) -> list[nn.Module]:
    return [it.dep.target.module for it in group.items
            if isinstance(it.dep.target.module, nn.Conv2d) and it.dep.handler.__name__ == "prune_out_channels"]


def _ratio_for(name: str, ratio: float, cfg: PruneConfig) -> float:
    """The longest matching override prefix wins; otherwise the searched uniform ratio."""
    matches = [(len(prefix), r) for prefix, r in cfg.overrides if name.startswith(prefix)]
    return max(matches)[1] if matches else ratio


def _keep_count(channels: int, ratio: float, cfg: PruneConfig) -> int:
    keep = math.ceil(channels * (1 - ratio) / cfg.round_to) * cfg.round_to
    return int(min(channels, max(keep, cfg.min_channels)))


def _prune_once(model: nn.Module, ratio: float, cfg: PruneConfig):
    """Prune `model` in place with one uniform ratio; returns (history, locked-name map)."""
    model.eval()
    example = torch.zeros(1, 3, cfg.imgsz, cfg.imgsz)
    unfuse_split_blocks(model)
    graph, groups, locked, skipped = _groups(model, example)
    conv_to_root = {conv: root for root, g in groups.items() for conv in _out_convs(g)}
    names = {m: n for n, m in model.named_modules()}
    keep = {root: _keep_count(len(g[0].idxs), _ratio_for(names[root], ratio, cfg), cfg) for root, g in groups.items()}
    for a, b in split_pairs(model):  # both halves keep the same width; a locked half locks the other
        ra, rb = conv_to_root.get(a), conv_to_root.get(b)
        if ra is None or rb is None:
            for r in (ra, rb):
                if r is not None:
                    keep[r] = len(groups[r][0].idxs)
            continue
        keep[ra] = keep[rb] = max(keep[ra], keep[rb])
    importance = _importance(cfg.criterion)
    plans = []
    for root, group in groups.items():
        channels = len(group[0].idxs)
        if keep[root] >= channels:
            continue
        scores = importance(group)
        prune_idxs = torch.argsort(scores)[: channels - keep[root]].tolist()
        plans.append((root, group[0].dep.handler, sorted(prune_idxs)))
    for root, handler, idxs in plans:
        sub = graph.get_pruning_group(root, handler, idxs)
        if graph.check_pruning_group(sub):
            sub.prune()
    names = {m: n for n, m in model.named_modules()}  # after pruning: the same modules, names unchanged
    locked_names = {names[m]: why for m, why in {**locked, **skipped}.items() if m in names}
    history = graph.pruning_history()
    refuse_split_blocks(model)
    return history, locked_names


def prune_at_ratio(model: nn.Module, ratio: float, cfg: PruneConfig) -> tuple[nn.Module, PruneResult]:
    """One uniform channel ratio, no FLOPs search: for sweeps, sensitivity scans and tests."""
    model = deepcopy(model).float().eval()
    macs0, params0 = count_macs(model, cfg.imgsz)
    widths0 = _conv_widths(model)
    pruned = deepcopy(model)
    history, locked = _prune_once(pruned, ratio, cfg)
    macs, params = count_macs(pruned, cfg.imgsz)
    return pruned, _result(pruned, ratio, macs0, params0, widths0, macs, params, locked, history)


def _result(pruned: nn.Module, ratio: float, macs0: int, params0: int, widths0: dict[str, int], macs: int,
            params: int, locked: dict[str, str], history: list) -> PruneResult:
    widths1 = _conv_widths(pruned)
    layers = {n: [w, widths1.get(n, w)] for n, w in widths0.items() if widths1.get(n, w) != w}
    return PruneResult(round(ratio, 4), macs0, macs, params0, params, layers, locked, history)


def _conv_widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def prune(model: nn.Module, cfg: PruneConfig) -> tuple[nn.Module, PruneResult]:
    """Return a pruned copy of `model` whose MACs are about (1 - flops_reduction) of the original."""
    model = deepcopy(model).float().eval()
    macs0, params0 = count_macs(model, cfg.imgsz)
    widths0 = _conv_widths(model)
    goal = 1 - cfg.flops_reduction

    def trial(ratio: float):
        candidate = deepcopy(model)
        history, locked = _prune_once(candidate, ratio, cfg)
        macs, params = count_macs(candidate, cfg.imgsz)
        return candidate, history, locked, macs, params

    if cfg.flops_reduction == 0:
        best = (*trial(0.0), 0.0)
    else:
        best = None
        first_guess = 1 - math.sqrt(goal)  # conv MACs scale with in x out channels
        lo, hi = max(0.0, first_guess - 0.15), min(0.95, first_guess + 0.2)
        for _ in range(cfg.max_trials):  # bisection on the uniform channel ratio
            mid = (lo + hi) / 2
            candidate, history, locked, macs, params = trial(mid)
            kept = macs / macs0
            if best is None or abs(kept - goal) < abs(best[3] / macs0 - goal):
                best = (candidate, history, locked, macs, params, mid)
            if abs(kept - goal) <= cfg.tolerance:
                break
            lo, hi = (mid, hi) if kept > goal else (lo, mid)
    pruned, history, locked, macs, params, ratio = best
    return pruned, _result(pruned, ratio, macs0, params0, widths0, macs, params, locked, history)
