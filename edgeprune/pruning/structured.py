"""Structured channel pruning of YOLO detectors with Torch-Pruning's dependency graph.

Whole output channels (and everything coupled to them: BN, residual adds, concats, the next
layers' inputs) are removed, so the dense model really shrinks. The steps:

1. split blocks get two half convs (models.blocks) so the graph has no chunk/split to mis-map;
2. layers whose channels cannot change are locked: the head's final box/class convs, DFL,
   attention internals (their forward reshapes by head count: with `attention_heads` they are
   pruned a whole head at a time instead, pruning.heads), and any group still passing through a
   split/slice op; locked blocks are reported by name;
3. a survey scores every remaining group's channels once with an importance criterion
   (magnitude, BN scale, first-order Taylor of the detection loss, random), divided by the group's
   mean so groups compare;
4. a plan maps a searched fraction to channels kept per group: `uniform` removes that fraction of
   every group, `global` removes the globally lowest-scored fraction of all channels; both keep
   round_to multiples, min_channels, per-prefix overrides (fixed ratios) and equal split halves;
5. a search (prune.search) finds the plan nearest the FLOPs goal (rounding makes FLOPs jumpy);
6. the halves are concatenated back, leaving only Ultralytics classes, and the kept output
   channels of every conv are recorded so `prune.replay` can rebuild the model from the original.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from copy import deepcopy
from dataclasses import asdict, dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.evaluation.model_stats import count_macs
from edgeprune.models.blocks import head_twins, refuse_split_blocks, split_pairs, unfuse_split_blocks
from edgeprune.pruning import heads as attention_heads
from edgeprune.pruning import replay as replay_record
from edgeprune.pruning.graph import dependency_graph
from edgeprune.pruning.search import search
from edgeprune.pruning.taylor import accumulate_loss_gradients, clear_gradients

CRITERIA = ("l1", "l2", "bn", "taylor", "random")
DATA_CRITERIA = ("taylor",)  # criteria that score with loss gradients, so need labelled batches
ALLOCATIONS = ("uniform", "knapsack")  # how a FLOPs goal spreads over layers: one ratio each | budget.flops
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
    max_trials: int = 24  # distinct prunings the FLOPs search may measure
    global_ranking: bool = False  # rank channels across all groups instead of cutting each group by one ratio
    attention_heads: bool = False  # also drop whole attention heads (the checkpoint then needs edgeprune to load)
    allocation: str = "uniform"  # FLOPs goal: one ratio per layer (searched) | knapsack: least importance per MAC

    @classmethod
    def from_recipe(cls, prune, round_to: int, imgsz: int) -> "PruneConfig":
        """What a profile's `recipe.prune` section asks for, at the device's round_to and one input size."""
        return cls(flops_reduction=prune.flops_reduction, criterion=prune.criterion, round_to=round_to, imgsz=imgsz,
                   global_ranking=prune.global_ranking, attention_heads=prune.attention_heads,
                   allocation=prune.allocation)


@dataclass
class PruneResult:
    ratio: float  # the searched fraction (inside a rounding step, some groups take the next step's width)
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    layers: dict[str, list[int]]  # conv name -> [out channels before, after]
    locked: dict[str, str]  # module name -> reason it was not pruned
    imgsz: int = 0  # MACs were counted at this input size
    kept: dict[str, list[int]] = field(default_factory=dict)  # conv name -> kept output channels of the original conv
    history: list = field(default_factory=list)  # Torch-Pruning pruning history (of the split-block model)
    heads: dict[str, dict] = field(default_factory=dict)  # attention block -> {"heads": before, "kept": [indices]}

    @property
    def flops_reduction(self) -> float:
        return 1 - self.macs_after / self.macs_before

    def summary(self) -> dict:
        out = asdict(self)
        out["flops_reduction"] = round(self.flops_reduction, 4)
        out.pop("history")
        out.pop("kept")
        return out

    def replay_record(self) -> dict:
        """JSON-ready kept-channel record for `edgeprune.pruning.replay.replay`."""
        return replay_record.make_record(self.kept, {n: w[0] for n, w in self.layers.items()}, self.imgsz, self.heads)


def _importance(criterion: str):
    """Raw per-channel scores; normalisation per group happens in the survey, the same for every criterion."""
    if criterion not in CRITERIA:
        raise EdgepruneError(f"unknown pruning criterion {criterion!r}", f"use one of {', '.join(CRITERIA)}")
    return {"l1": lambda: tp.importance.GroupMagnitudeImportance(p=1, normalizer=None),
            "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2, normalizer=None),
            "bn": lambda: tp.importance.BNScaleImportance(normalizer=None),
            "taylor": lambda: tp.importance.GroupTaylorImportance(normalizer=None),
            "random": lambda: tp.importance.RandomImportance()}[criterion]()


def _locked_layers(model: nn.Module) -> dict[nn.Module, str]:
    """Convs whose output channels Torch-Pruning must not change, with the reason."""
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
    graph = dependency_graph(model, example)
    groups, skipped = {}, {}
    for group in graph.get_all_groups(ignored_layers=list(locked), root_module_types=[nn.Conv2d]):
        root = group[0].dep.target.module
        if any(item.dep.target.type in SPLIT_LIKE for item in group.items):
            skipped[root] = "group passes through a split/slice that edgeprune does not rewrite"
            continue
        groups[root] = group
    return graph, groups, locked, skipped


def _effects(group, names: dict) -> list[tuple[str, str, int]]:
    """(conv, "out" | "in", channels it loses per channel of the group): what a latency cost reads. A conv can take
    a group's channels more than once (a concat of a split half and that half's residual sum)."""
    width = len(group[0].idxs)
    counts: dict[tuple[str, str], set] = {}
    for item in group.items:
        module, handler = item.dep.target.module, item.dep.handler.__name__
        if isinstance(module, nn.Conv2d) and handler in ("prune_out_channels", "prune_in_channels"):
            side = "out" if handler == "prune_out_channels" else "in"
            counts.setdefault((names[module], side), set()).update(item.idxs)
    return [(conv, side, max(1, round(len(idxs) / width))) for (conv, side), idxs in counts.items()]


def _is_out_conv(dep) -> bool:
    return isinstance(dep.target.module, nn.Conv2d) and dep.handler.__name__ == "prune_out_channels"


def _out_convs(group) -> list[nn.Module]:
    return [it.dep.target.module for it in group.items if _is_out_conv(it.dep)]


def _ratio_for(name: str, cfg: PruneConfig) -> float | None:
    """The longest matching override prefix's fixed ratio, or None: the group takes the searched fraction."""
    matches = [(len(prefix), r) for prefix, r in cfg.overrides if name.startswith(prefix)]
    return max(matches)[1] if matches else None


def _round_keep(keep: float, channels: int, cfg: PruneConfig, rounding: tuple[int, int] | None = None) -> int:
    """Round a channel count up to a round_to multiple, at least min_channels, at most all of them."""
    step, floor = rounding or (cfg.round_to, cfg.min_channels)
    keep = math.ceil(keep / step - 1e-9) * step
    return int(min(channels, max(keep, floor)))


@dataclass
class _Survey:
    """Everything the plans need, measured once on the split-block model (names are its module names)."""
    channels: dict[str, int]  # group root -> channels
    scores: dict[str, torch.Tensor]  # group root -> importance per channel / group mean (a head: x its width)
    fixed: dict[str, float]  # group root -> override ratio
    pairs: list[tuple[str | None, str | None]]  # roots that must stay equally wide: split halves, an end-to-end
    # head's twin branches (None: locked)
    locked: dict[str, str]  # module name -> reason it is not pruned
    effects: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)  # root -> convs it narrows (_effects)
    raw: dict[str, torch.Tensor] = field(default_factory=dict)  # the criterion's own scale (comparable across
    # groups only for loss-based criteria: taylor estimates the loss change of removing each channel)
    heads: set[str] = field(default_factory=set)  # groups that are attention blocks: their units are whole heads
    base: "_Base | None" = None  # what it was measured on, so later cuts can reuse it (prune_to_widths(surveyed=))

    def rounding(self, name: str, round_to: int, min_channels: int) -> tuple[int, int]:
        """(step, floor) of a group's widths: channels round to round_to; heads go one at a time, at least one."""
        return (1, 1) if name in self.heads else (round_to, min_channels)


def _survey_heads(work: nn.Module, survey: "_Survey", cfg: PruneConfig) -> None:
    """Attention blocks as groups of whole heads; their convs leave the locked list."""
    for name, module in attention_heads.attention_blocks(work).items():
        if module.num_heads < 2:
            continue
        raw = attention_heads.score_heads(module, cfg.criterion)
        survey.heads.add(name)
        survey.channels[name] = module.num_heads
        survey.effects[name] = attention_heads.head_effects(name, module)
        survey.scores[name] = raw / raw.mean().clamp_min(1e-12) * module.head_dim  # a head weighs its value width
        survey.raw[name] = raw
        if (ratio := _ratio_for(name, cfg)) is not None:
            survey.fixed[name] = ratio
        for conv in ("qkv.conv", "pe.conv", "proj.conv"):
            survey.locked.pop(f"{name}.{conv}", None)


def _survey(model: nn.Module, cfg: PruneConfig, batches: Iterable[dict] | None) -> _Survey:
    importance = _importance(cfg.criterion)
    if cfg.criterion in DATA_CRITERIA and batches is None:
        raise EdgepruneError(f"{cfg.criterion} needs data: pass --data",
                             "the taylor criterion scores channels by detection-loss gradients on labelled images; "
                             "in Python pass prune(..., batches=edgeprune.data.batches.loss_batches(dataset, imgsz))")
    work = deepcopy(model).float().eval()
    unfuse_split_blocks(work)  # scores must come from the modules that are actually pruned
    if cfg.criterion in DATA_CRITERIA:
        accumulate_loss_gradients(work, batches)
    _, groups, locked, skipped = _groups(work, torch.zeros(1, 3, cfg.imgsz, cfg.imgsz))
    names = {m: n for n, m in work.named_modules()}
    survey = _Survey({}, {}, {}, [], {names[m]: why for m, why in {**locked, **skipped}.items()})
    for root, group in groups.items():
        name = names[root]
        scores = importance(group)
        if scores is None:
            continue
        scores = scores.detach().float().flatten()
        survey.channels[name] = len(group[0].idxs)
        survey.effects[name] = _effects(group, names)
        survey.scores[name] = scores / scores.mean().clamp_min(1e-12)
        survey.raw[name] = scores
        if (ratio := _ratio_for(name, cfg)) is not None:
            survey.fixed[name] = ratio
    if cfg.attention_heads:
        _survey_heads(work, survey, cfg)
    clear_gradients(work)
    conv_to_root = {conv: names[root] for root, g in groups.items() for conv in _out_convs(g)
                    if names[root] in survey.channels}
    for a, b in split_pairs(work) + head_twins(work):
        pair = (conv_to_root.get(a), conv_to_root.get(b))
        if pair != (None, None) and pair not in survey.pairs:
            survey.pairs.append(pair)
    return survey


def _plan(survey: _Survey, fraction: float, cfg: PruneConfig) -> dict[str, int]:
    """Channels kept per group root for one searched fraction."""
    def rounded(name: str, kept: float) -> int:
        return _round_keep(kept, survey.channels[name], cfg, survey.rounding(name, cfg.round_to, cfg.min_channels))

    searched = [n for n in survey.channels if n not in survey.fixed]
    ranked = [n for n in searched if n not in survey.heads]  # heads take the fraction: a head is not a channel
    keep = {n: rounded(n, survey.channels[n] * (1 - fraction)) for n in searched}
    if cfg.global_ranking and ranked:
        scores = torch.cat([survey.scores[n] for n in ranked])
        owner = torch.cat([torch.full((survey.channels[n],), i) for i, n in enumerate(ranked)])
        lowest = torch.argsort(scores, stable=True)[: int(fraction * len(scores))]
        removed = torch.bincount(owner[lowest], minlength=len(ranked)).tolist()
        keep.update({n: rounded(n, survey.channels[n] - r) for n, r in zip(ranked, removed)})
    for n, r in survey.fixed.items():
        keep[n] = rounded(n, survey.channels[n] * (1 - r))
    for a, b in survey.pairs:  # both halves keep the same width; a locked half locks the other
        if a is None or b is None:
            for r in (a, b):
                if r is not None:
                    keep[r] = survey.channels[r]
        else:
            keep[a] = keep[b] = max(keep[a], keep[b])
    return keep


def _step_moves(survey: _Survey):
    """For search(): groups that differ between two plans, as moves ordered least important first."""
    partner = {}
    for a, b in survey.pairs:
        if a is not None and b is not None:
            partner[a], partner[b] = b, a

    def moves(wide: dict[str, int], narrow: dict[str, int]) -> list[dict[str, int]]:
        units, seen = [], set()
        for name in wide:
            if wide[name] == narrow[name] or name in seen:
                continue
            members = [name] + ([partner[name]] if name in partner else [])
            seen.update(members)
            dropped = [torch.sort(survey.scores[m]).values[survey.channels[m] - wide[m]: survey.channels[m] - narrow[m]]
                       for m in members]
            units.append((float(torch.cat(dropped).mean()), {m: narrow[m] for m in members}))
        return [move for _, move in sorted(units, key=lambda u: u[0])]

    return moves


def _prune_to_plan(model: nn.Module, survey: _Survey, keep: dict[str, int], cfg: PruneConfig):
    """Prune `model` in place to `keep`; returns (history, kept output channels per conv).

    Only the surveyed roots are cut (no second group enumeration: a trial is one graph build and the cuts).
    """
    model.eval()
    split_blocks = unfuse_split_blocks(model)
    graph = dependency_graph(model, torch.zeros(1, 3, cfg.imgsz, cfg.imgsz))
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    widths = {n: m.out_channels for n, m in modules.items() if isinstance(m, nn.Conv2d)}
    plans = []
    for name, channels in survey.channels.items():
        if name in survey.heads:
            continue  # cut after the graph's groups, below
        if widths.get(name) != channels:
            raise RuntimeError(f"group {name} changed between survey and pruning")
        drop = channels - keep[name]
        if drop > 0:
            plans.append((modules[name], sorted(torch.argsort(survey.scores[name], stable=True)[:drop].tolist())))
    removed: dict[str, set[int]] = {}
    for root, idxs in plans:
        sub = graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs)
        if graph.check_pruning_group(sub):
            for item in sub.items:
                if _is_out_conv(item.dep):
                    removed.setdefault(names[item.dep.target.module], set()).update(item.idxs)
            sub.prune()
    kept = {n: [i for i in range(widths[n]) if i not in gone] for n, gone in removed.items()}
    kept = replay_record.split_kept(kept, widths, [names[m] for m in split_blocks])
    history = graph.pruning_history()
    refuse_split_blocks(model)
    heads = {}
    for name in sorted(survey.heads):
        if keep[name] < survey.channels[name]:
            ranked = torch.argsort(survey.scores[name], descending=True, stable=True)
            chosen = sorted(ranked[: keep[name]].tolist())
            kept.update(attention_heads.drop_heads(model.get_submodule(name), chosen, name))
            heads[name] = {"heads": survey.channels[name], "kept": chosen}
    return history, kept, heads


def _conv_widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _check_kept(pruned: nn.Module, widths0: dict[str, int], kept: dict[str, list[int]]) -> None:
    """The kept-channel record must describe the pruned model exactly, or replay would build another."""
    for name, w1 in _conv_widths(pruned).items():
        w0 = widths0[name]
        expected = len(kept[name]) if name in kept else w0
        if w1 != expected:
            raise RuntimeError(f"kept-channel record disagrees with the pruned model at {name}: {w0} -> {w1} channels, "
                               f"record keeps {expected}")


class _Trial:
    def __init__(self, survey: _Survey, keep: dict[str, int], cfg: PruneConfig):
        self.model = deepcopy(survey.base.model)
        self.history, self.kept, self.heads = _prune_to_plan(self.model, survey, keep, cfg)
        self.locked = survey.locked
        self.macs, self.params = count_macs(self.model, cfg.imgsz)


@dataclass(frozen=True)
class _Base:
    """The float copy a survey was measured on, its size before any cut, and the config it was taken with."""
    model: nn.Module
    macs: int
    params: int
    widths: dict[str, int]
    cfg: PruneConfig


def _prepare(model: nn.Module, cfg: PruneConfig, batches: Iterable[dict] | None) -> _Survey:
    model = deepcopy(model).float().eval()
    macs0, params0 = count_macs(model, cfg.imgsz)
    found = _survey(model, cfg, batches)
    found.base = _Base(model, macs0, params0, _conv_widths(model), cfg)
    return found


def _result(trial: _Trial, ratio: float, base: _Base, cfg: PruneConfig):
    _check_kept(trial.model, base.widths, trial.kept)
    widths1 = _conv_widths(trial.model)
    layers = {n: [w, widths1[n]] for n, w in base.widths.items() if widths1[n] != w}
    result = PruneResult(round(ratio, 4), base.macs, trial.macs, base.params, trial.params, layers, trial.locked,
                         cfg.imgsz, trial.kept, trial.history, trial.heads)
    return trial.model, result


def survey(model: nn.Module, cfg: PruneConfig, batches: Iterable[dict] | None = None) -> _Survey:
    """The prunable groups of `model` (names of its split-block form), their scores, pairs and locks; pass it back
    to prune_to_widths(surveyed=) to cut several plans without scoring the model again."""
    return _prepare(model, cfg, batches)


def split_block_copy(model: nn.Module) -> nn.Module:
    """The model with split blocks as two half convs: the names a survey and its widths use."""
    work = deepcopy(model).float().eval()
    unfuse_split_blocks(work)
    return work


def prune_to_widths(model: nn.Module, keep: dict[str, int], cfg: PruneConfig, batches: Iterable[dict] | None = None,
                    surveyed: _Survey | None = None) -> tuple[nn.Module, PruneResult]:
    """Prune to given channels per group root (a budget plan), lowest-scored channels first. `surveyed`: this
    model's survey under this same config, which saves scoring it again (a taylor survey runs the loss)."""
    if surveyed is not None and (surveyed.base is None or surveyed.base.cfg != cfg):
        raise EdgepruneError("the survey passed to prune_to_widths was taken with another prune config",
                             "survey the model again with this config, or pass surveyed=None")
    found = surveyed or _prepare(model, cfg, batches)
    unknown = sorted(set(keep) - set(found.channels))
    if unknown:
        raise EdgepruneError(f"width plan names groups this model does not have: {', '.join(unknown[:5])}",
                             "plan again on this model (edgeprune.budget.plan)")
    full = {n: keep.get(n, c) for n, c in found.channels.items()}
    kept = sum(full.values()) / max(1, sum(found.channels.values()))
    return _result(_Trial(found, full, cfg), round(1 - kept, 4), found.base, cfg)


def prune_at_ratio(model: nn.Module, ratio: float, cfg: PruneConfig,
                   batches: Iterable[dict] | None = None) -> tuple[nn.Module, PruneResult]:
    """One fraction, no FLOPs search: for sweeps, sensitivity scans and tests."""
    survey = _prepare(model, cfg, batches)
    return _result(_Trial(survey, _plan(survey, ratio, cfg), cfg), ratio, survey.base, cfg)


def prune(model: nn.Module, cfg: PruneConfig,
          batches: Iterable[dict] | None = None) -> tuple[nn.Module, PruneResult]:
    """Return a pruned copy of `model` whose MACs are about (1 - flops_reduction) of the original.

    `batches` (Ultralytics-style dicts: img, batch_idx, cls, bboxes) are needed by data criteria (taylor).
    This is the uniform allocation; edgeprune.budget.flops.prune_to_flops picks by `cfg.allocation`.
    """
    if cfg.allocation != "uniform":
        raise EdgepruneError(f"prune() cuts one ratio per layer, but the config asks for allocation {cfg.allocation!r}",
                             "call edgeprune.budget.flops.prune_to_flops, which picks by allocation")
    survey = _prepare(model, cfg, batches)
    if cfg.flops_reduction == 0:
        return _result(_Trial(survey, _plan(survey, 0.0, cfg), cfg), 0.0, survey.base, cfg)

    def measure(keep: dict[str, int]):
        trial = _Trial(survey, keep, cfg)
        return trial.macs / survey.base.macs, trial

    goal = 1 - cfg.flops_reduction
    best = search(lambda f: _plan(survey, f, cfg), measure, goal, cfg.tolerance, cfg.max_trials,
                  first_guess=1 - math.sqrt(goal),  # conv MACs scale with in x out channels
                  step_moves=_step_moves(survey))
    return _result(best.payload, best.fraction, survey.base, cfg)
