"""A FLOPs goal met by the budget's knapsack instead of one ratio per layer.

The uniform FLOPs goal (pruning.structured.prune) cuts every group by the same fraction. Here the knapsack
(budget.knapsack) is priced in GMACs of the deployed graph rather than milliseconds: channels go in order of
importance lost per MAC saved, so layers that cost many MACs and matter little give up more. With a loss-based
criterion (taylor) importance is on one scale across groups; other criteria are normalised per group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from torch import nn

from edgeprune.budget.costs import Predictor, conv_census
from edgeprune.budget.knapsack import allocate
from edgeprune.errors import EdgepruneError
from edgeprune.evaluation.model_stats import count_macs
from edgeprune.latency.features import STRIDES
from edgeprune.pruning.structured import (ALLOCATIONS, DATA_CRITERIA, PruneConfig, PruneResult, prune,
                                          prune_to_widths, split_block_copy, survey)

CORRECTIONS = 6  # the census counts convs only: re-aim until the real pruned model meets the goal


def _gmacs(features: dict) -> float:
    return sum(features[f"gmacs_s{s}"] for s in STRIDES)


GMACS = Predictor("GMACs of the deployed convs", "p50", False, _gmacs, lambda m, s: count_macs(m, s)[0] / 1e9,
                  additive=True)


def prune_flops_knapsack(model: nn.Module, cfg: PruneConfig,
                         batches: Iterable[dict] | None = None) -> tuple[nn.Module, PruneResult]:
    """Remove `cfg.flops_reduction` of the FLOPs, within `cfg.tolerance`, by the knapsack's widths."""
    if cfg.global_ranking or cfg.overrides:
        raise EdgepruneError("the knapsack chooses every layer's width itself, so it takes no global ranking and no "
                             "per-layer ratios", "drop --global / --override, or use the uniform allocation")
    found = survey(model, cfg, batches)
    census = conv_census(split_block_copy(model), cfg.imgsz)
    full = _gmacs(census.features(*census.widths(found.channels, {}, found.effects)))
    aim = full * (1 - cfg.flops_reduction)
    best = None
    for _ in range(CORRECTIONS + 1):
        allocation = allocate(found, census, GMACS, aim, cfg.round_to, cfg.min_channels,
                              comparable=cfg.criterion in DATA_CRITERIA)
        module, result = prune_to_widths(model, allocation.keep, cfg, surveyed=found)
        miss = cfg.flops_reduction - result.flops_reduction
        if best is None or abs(miss) < abs(best[2]):
            best = (module, result, miss)
        if abs(miss) <= cfg.tolerance or not allocation.fits:
            break
        aim *= (1 - cfg.flops_reduction) / max(1e-6, 1 - result.flops_reduction)
    return best[0], best[1]


ALLOCATE = {"uniform": prune, "knapsack": prune_flops_knapsack}
assert set(ALLOCATE) == set(ALLOCATIONS)


def prune_to_flops(model: nn.Module, cfg: PruneConfig,
                   batches: Iterable[dict] | None = None) -> tuple[nn.Module, PruneResult]:
    """A FLOPs goal by `cfg.allocation`: one ratio per layer (pruning.structured.prune) or the knapsack's widths."""
    if cfg.allocation not in ALLOCATE:
        raise EdgepruneError(f"unknown allocation {cfg.allocation!r}", f"use one of {', '.join(ALLOCATE)}")
    if cfg.flops_reduction == 0:
        return prune(model, dataclasses.replace(cfg, allocation="uniform"), batches)
    return ALLOCATE[cfg.allocation](model, cfg, batches)
