"""The most accurate compression predicted to fit a latency budget: input size x channel widths.

At every candidate input size the knapsack (budget.knapsack) finds the widths that fit (the unpruned
model when it already does), the real pruned model is predicted again and, on a miss, the knapsack's
budget is tightened until it fits. On a device that is this machine (`device.measure_here`) the
candidate is also exported and timed here, and a measured miss is corrected the same way. Candidates
are then ranked by the adaptive-BN proxy (budget.proxy); the winner alone gets the full fine-tune.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from collections.abc import Iterable
from typing import Callable

from torch import nn

from edgeprune.budget.costs import Predictor, conv_census, predictor_for
from edgeprune.budget.knapsack import allocate
from edgeprune.budget.proxy import NAME as PROXY_NAME
from edgeprune.budget.sizes import Sizes
from edgeprune.errors import EdgepruneError
from edgeprune.pruning.structured import PruneConfig, prune_to_widths, split_block_copy, survey
from edgeprune.targets import Target

Batches = Callable[[int], Iterable[dict]] | None
CORRECTIONS = 4  # re-plans with a tighter knapsack budget after a predicted or measured miss


@dataclass
class Candidate:
    imgsz: int
    pruned: bool
    keep: dict[str, int]
    predicted_ms: float  # of the real pruned model, at the budget's percentile
    measured_ms: float | None = None  # timed here (device.measure_here)
    kept_importance: float = 1.0
    flops_reduction: float = 0.0
    params: int = 0
    proxy_map: float | None = None
    corrections: int = 0

    def row(self) -> dict:
        out = asdict(self)
        out.pop("keep")
        return out


@dataclass
class BudgetPlan:
    budget_ms: float
    percentile: str
    source: str
    sizes: Sizes
    candidates: list[Candidate]
    chosen: Candidate
    proxy: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"budget_ms": self.budget_ms, "percentile": self.percentile, "source": self.source,
                "sizes": list(self.sizes.candidates), "sizes_why": self.sizes.why, "proxy": self.proxy,
                "chosen": self.chosen.row(), "candidates": [c.row() for c in self.candidates], "notes": self.notes}

    def reason(self) -> str:
        c = self.chosen
        what = (f"unpruned at {c.imgsz} px" if not c.pruned else
                f"pruned at {c.imgsz} px (-{c.flops_reduction:.0%} FLOPs, {c.kept_importance:.0%} of channel importance kept)")
        return (f"{what}: predicted {self.percentile} {c.predicted_ms:.2f} ms <= budget {self.budget_ms:g} ms "
                f"({c.predicted_ms / self.budget_ms:.0%} of it; {self.source}); sizes {self.sizes.why}; "
                f"ranked by {self.proxy}")


def predict_module(module: nn.Module, imgsz: int, predict: Predictor) -> float:
    """The prediction of a real module, the same number the export stage and the report show."""
    return float(predict.module_fn(module, imgsz))


def fastest(model: nn.Module, target: Target, sizes: Sizes, predict: Predictor, cfg: PruneConfig) -> tuple[float, int]:
    """The lowest prediction any candidate can reach (every group at its floor, smallest size): what a budget
    below it cannot be met with."""
    imgsz = min(sizes.candidates)
    found = survey(model, PruneConfig(**{**asdict(cfg), "imgsz": imgsz, "criterion": "l1"}))  # floors need no scores
    allocation = allocate(found, conv_census(split_block_copy(model), imgsz), predict, 0.0, cfg.round_to,
                          cfg.min_channels)
    return allocation.floor_ms, imgsz


def check_reachable(model: nn.Module, target: Target, sizes: Sizes, predict: Predictor, cfg: PruneConfig) -> None:
    floor_ms, imgsz = fastest(model, target, sizes, predict, cfg)
    if floor_ms > target.budget.latency_ms:
        raise EdgepruneError(
            f"latency budget {target.budget.latency_ms:g} ms ({predict.percentile}) cannot be met: the fastest "
            f"candidate (every prunable group at its floor, {imgsz} px) is predicted at {floor_ms:.2f} ms "
            f"({predict.source})",
            "raise budget.latency_ms (--budget), add smaller recipe.imgsz_candidates, or prune to a FLOPs goal (--flops)")


def _at(cfg: PruneConfig, imgsz: int) -> PruneConfig:
    return PruneConfig(**{**asdict(cfg), "imgsz": imgsz})


def fit_size(model: nn.Module, imgsz: int, budget_ms: float, predict: Predictor, cfg: PruneConfig,
             timer: Callable[[nn.Module, int], float] | None = None, batches: Batches = None) -> Candidate | None:
    """The knapsack's widths at one size, corrected until the real pruned model is predicted (and, with a
    timer, measured) within the budget; None when nothing at this size fits. `batches(imgsz)`: labelled
    batches for data criteria (taylor)."""
    cfg = _at(cfg, imgsz)
    data = (lambda: batches(imgsz)) if batches else (lambda: None)
    found = survey(model, cfg, data())
    census = conv_census(split_block_copy(model), imgsz)
    aim = budget_ms
    for attempt in range(CORRECTIONS + 1):
        allocation = allocate(found, census, predict, aim, cfg.round_to, cfg.min_channels)
        if not allocation.fits:
            return None
        pruned_any = allocation.keep != found.channels
        module, result = prune_to_widths(model, allocation.keep if pruned_any else {}, cfg, data())
        predicted = predict_module(module, imgsz, predict)
        measured = timer(module, imgsz) if timer else None
        worst = max(predicted, measured or 0.0)
        if worst <= budget_ms:
            return Candidate(imgsz, pruned_any, allocation.keep if pruned_any else {}, round(predicted, 3),
                             None if measured is None else round(measured, 3), allocation.kept_importance,
                             round(result.flops_reduction, 4), result.params_after, corrections=attempt)
        aim *= budget_ms / worst * 0.98  # the miss, plus a little: the prediction is not exactly additive
    return None


def plan_budget(model: nn.Module, target: Target, sizes: Sizes, latency_model, cfg: PruneConfig,
                proxy: Callable[[nn.Module, int], float], timer: Callable[[nn.Module, int], float] | None = None,
                anchor: Callable[[nn.Module, int], float] | None = None, batches: Batches = None) -> BudgetPlan:
    """Candidates at every size, ranked by `proxy`; `anchor` (optional) scales an estimate to a timing here."""
    predict = predictor_for(target, latency_model)
    budget = target.budget.latency_ms
    notes = []
    if anchor is not None and not predict.measured:
        predict, note = anchored(predict, model, sizes, anchor)
        notes.append(note)
    check_reachable(model, target, sizes, predict, cfg)
    candidates = []
    for imgsz in sizes.candidates:
        candidate = fit_size(model, imgsz, budget, predict, cfg, timer, batches)
        if candidate is None:
            notes.append(f"{imgsz} px: no widths fit the budget")
            continue
        module = (prune_to_widths(model, candidate.keep, _at(cfg, imgsz), batches(imgsz) if batches else None)[0]
                  if candidate.pruned else model)
        candidate.proxy_map = round(proxy(module, imgsz), 4)
        candidates.append(candidate)
        print(f"  budget plan {imgsz} px: {'pruned' if candidate.pruned else 'unpruned'}, predicted "
              f"{candidate.predicted_ms:.2f} ms, proxy mAP50-95 {candidate.proxy_map:.3f}")
        if not candidate.pruned:
            break  # smaller sizes of an unpruned model that fits only lose accuracy
    if not candidates:
        raise EdgepruneError(f"latency budget {budget:g} ms: no candidate size fits after correction ({predict.source})",
                             "raise budget.latency_ms (--budget) or prune to a FLOPs goal (--flops)")
    chosen = max(candidates, key=lambda c: (c.proxy_map, -c.predicted_ms))
    return BudgetPlan(budget, predict.percentile, predict.source, sizes, candidates, chosen, PROXY_NAME, notes)


def anchored(predict: Predictor, model: nn.Module, sizes: Sizes, timer: Callable[[nn.Module, int], float]):
    """An estimate scaled so the unpruned model's prediction equals its timing here, at the largest size."""
    imgsz = sizes.largest
    measured, estimated = timer(model, imgsz), predict_module(model, imgsz, predict)
    scale = measured / estimated
    source = f"{predict.source}, scaled x{scale:.2f} to the unpruned model timed on this machine"
    return (predict.scaled(scale, source),
            f"estimate anchored at {imgsz} px: measured {measured:.2f} ms vs estimated {estimated:.2f} ms")

