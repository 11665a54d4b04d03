"""The most accurate compression predicted to fit a latency budget: input size x precision x channel widths.

For every candidate precision (the profile's `recipe.precision_candidates`, e.g. INT8 and FP16 on TensorRT)
and input size, the knapsack (budget.knapsack) finds the widths that fit (the unpruned model when it
already does), the real pruned model is predicted again and, on a miss, the knapsack's budget is
tightened until it fits. With a loss-based criterion (taylor, the profiles' default) channels are valued
on one scale across layers, as HALP's knapsack needs; magnitude criteria are only comparable within a
group, so each group's scores are divided by their mean and the knapsack is blind to which layers matter.
On a device that is this machine (`device.measure_here`) the candidate is also exported and timed here,
and a measured miss is corrected the same way. The plan aims below the budget by `budget.margin`, so
timing noise and model error do not push the artefact over it. Candidates are then ranked by the proxy
(budget.proxy: a short fine-tune, then adaptive BN), near-ties going to the larger input; INT8 candidates
are charged the accuracy the INT8 guard allows them to lose (`quantize.max_map_drop`) when they compete
with a float precision. The winner alone gets the full fine-tune.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Callable

from torch import nn

from edgeprune.budget.costs import Predictor, conv_census, predictor_for
from edgeprune.budget.knapsack import allocate
from edgeprune.budget.proxy import NAME as PROXY_NAME
from edgeprune.budget.sizes import Sizes
from edgeprune.errors import EdgepruneError
from edgeprune.pruning.structured import DATA_CRITERIA, PruneConfig, prune_to_widths, split_block_copy, survey
from edgeprune.targets import Target

Batches = Callable[[int], Iterable[dict]] | None
Timer = Callable[[nn.Module, int, str], float]  # (module, imgsz, precision) -> ms at the budget's percentile, timed here
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
    precision: str = ""
    score: float | None = None  # what the ranking compares: the proxy, less the INT8 charge across precisions
    confirmed_ms: float | None = None  # the chosen candidate's second timing (within the budget)

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
    margin: float = 0.0

    @property
    def aim_ms(self) -> float:
        return self.budget_ms * (1 - self.margin)

    def summary(self) -> dict:
        return {"budget_ms": self.budget_ms, "percentile": self.percentile, "source": self.source,
                "margin": self.margin, "aim_ms": round(self.aim_ms, 4),
                "sizes": list(self.sizes.candidates), "sizes_why": self.sizes.why, "proxy": self.proxy,
                "precisions": sorted({c.precision for c in self.candidates}),
                "chosen": self.chosen.row(), "candidates": [c.row() for c in self.candidates], "notes": self.notes}

    def reason(self) -> str:
        c = self.chosen
        what = (f"unpruned at {c.imgsz} px" if not c.pruned else
                f"pruned at {c.imgsz} px (-{c.flops_reduction:.0%} FLOPs, {c.kept_importance:.0%} of channel importance kept)")
        timed = f", timed here {c.measured_ms:.2f} ms" if c.measured_ms is not None else ""
        return (f"{what}, {c.precision}: predicted {self.percentile} {c.predicted_ms:.2f} ms{timed} <= budget "
                f"{self.budget_ms:g} ms ({c.predicted_ms / self.budget_ms:.0%} of it, {self.margin:.0%} kept free; "
                f"{self.source}); sizes {self.sizes.why}; ranked by {self.proxy}")


def predict_module(module: nn.Module, imgsz: int, predict: Predictor) -> float:
    """The prediction of a real module, the same number the export stage and the report show."""
    return float(predict.module_fn(module, imgsz))


def at_precision(target: Target, precision: str) -> Target:
    return dataclasses.replace(target, recipe=dataclasses.replace(target.recipe, precision=precision))


def fastest(model: nn.Module, sizes: Sizes, predict: Predictor, cfg: PruneConfig) -> tuple[float, int]:
    """The lowest prediction any candidate can reach (every group at its floor, smallest size): what a budget
    below it cannot be met with."""
    imgsz = min(sizes.candidates)
    found = survey(model, PruneConfig(**{**asdict(cfg), "imgsz": imgsz, "criterion": "l1"}))  # floors need no scores
    allocation = allocate(found, conv_census(split_block_copy(model), imgsz), predict, 0.0, cfg.round_to,
                          cfg.min_channels)
    return allocation.floor_ms, imgsz


def check_reachable(model: nn.Module, target: Target, sizes: Sizes, predictors: "dict[str, Predictor] | Predictor",
                    cfg: PruneConfig) -> None:
    """One clear error when no precision, size and width can meet the budget (margin included)."""
    predictors = predictors if isinstance(predictors, dict) else {target.recipe.precision: predictors}
    aim = target.budget.latency_ms * (1 - target.budget.margin)
    floors = {p: fastest(model, sizes, predict, cfg) for p, predict in predictors.items()}
    precision, (floor_ms, imgsz) = min(floors.items(), key=lambda kv: kv[1][0])
    if floor_ms > aim:
        predict = predictors[precision]
        raise EdgepruneError(
            f"latency budget {target.budget.latency_ms:g} ms ({predict.percentile}) cannot be met: the fastest "
            f"candidate (every prunable group at its floor, {imgsz} px, {precision}) is predicted at {floor_ms:.2f} ms"
            f"{f' (the plan aims at {aim:.2f} ms, {target.budget.margin:.0%} kept free)' if target.budget.margin else ''}"
            f" ({predict.source})",
            "raise budget.latency_ms (--budget), add smaller recipe.imgsz_candidates, or prune to a FLOPs goal (--flops)")


def _at(cfg: PruneConfig, imgsz: int) -> PruneConfig:
    return PruneConfig(**{**asdict(cfg), "imgsz": imgsz})


def fit_size(model: nn.Module, imgsz: int, budget_ms: float, predict: Predictor, cfg: PruneConfig,
             timer: Callable[[nn.Module, int], float] | None = None, batches: Batches = None) -> Candidate | None:
    """The knapsack's widths at one size, corrected until the real pruned model is predicted (and, with a
    timer, measured) within `budget_ms`; None when nothing at this size fits. `batches(imgsz)`: labelled
    batches for data criteria (taylor)."""
    cfg = _at(cfg, imgsz)
    found = survey(model, cfg, batches(imgsz) if batches else None)
    census = conv_census(split_block_copy(model), imgsz)
    aim = budget_ms
    for attempt in range(CORRECTIONS + 1):
        allocation = allocate(found, census, predict, aim, cfg.round_to, cfg.min_channels,
                              comparable=cfg.criterion in DATA_CRITERIA)
        if not allocation.fits:
            return None
        pruned_any = allocation.keep != found.channels
        module, result = prune_to_widths(model, allocation.keep if pruned_any else {}, cfg, surveyed=found)
        predicted = predict_module(module, imgsz, predict)
        measured = timer(module, imgsz) if timer else None
        worst = max(predicted, measured or 0.0)
        if worst <= budget_ms:
            return Candidate(imgsz, pruned_any, allocation.keep if pruned_any else {}, round(predicted, 3),
                             None if measured is None else round(measured, 3), allocation.kept_importance,
                             round(result.flops_reduction, 4), result.params_after, corrections=attempt)
        aim *= budget_ms / worst * 0.98  # the miss, plus a little: the prediction is not exactly additive
    return None


def predictors_for(model: nn.Module, target: Target, sizes: Sizes, latency_model, timer: Timer | None,
                   notes: list[str]) -> dict[str, Predictor]:
    """A predictor per searched precision. A device table predicts only the precision it was measured at; when
    the device is this machine, the estimate or table is anchored to a timing of the unpruned model now."""
    predictors = {}
    for precision in target.recipe.searched_precisions:
        if latency_model is not None and latency_model.key.get("precision") != precision:
            notes.append(f"{precision}: not searched — the latency table was measured at "
                         f"{latency_model.key.get('precision')} (probe the device at {precision} to compare)")
            continue
        target_p = at_precision(target, precision)
        predict = predictor_for(target_p, latency_model)
        if timer is not None:  # a table probed here earlier drifts with this machine, as an estimate is off by a scale
            predict, note = anchored(predict, model, sizes, lambda m, s, p=precision: timer(m, s, p))
            notes.append(f"{precision}: {note}")
        predictors[precision] = predict
    return predictors


def plan_budget(model: nn.Module, target: Target, sizes: Sizes, latency_model, cfg: PruneConfig,
                proxy: Callable[[nn.Module, int], float], timer: Timer | None = None,
                batches: Batches = None, verify: Timer | None = None, proxy_name: str = PROXY_NAME) -> BudgetPlan:
    """Candidates at every precision and size, ranked by `proxy`; with `timer` (the device is this machine) the
    estimate is anchored to a timing here and every candidate is timed. `verify` times only the chosen candidate
    (for formats whose export is slow) and, on a miss, corrects it at its size and ranks again. Either way the
    chosen candidate is timed a second time before it is trusted: one timing on a busy machine can be off by a
    quarter (bench-budget), and a second miss is corrected like the first."""
    budget, margin = target.budget.latency_ms, target.budget.margin
    aim = budget * (1 - margin)
    notes: list[str] = []
    predictors = predictors_for(model, target, sizes, latency_model, timer, notes)
    check_reachable(model, target, sizes, predictors, cfg)
    charge = target.recipe.quantize.max_map_drop if len(predictors) > 1 else 0.0
    if charge:
        notes.append(f"int8 candidates are charged {charge:g} mAP50-95 (the INT8 guard's allowed drop) against "
                     "float precisions, whose artefacts keep the FP32 accuracy")
    candidates, proxies = [], {}

    def built(candidate: Candidate) -> nn.Module:
        return (prune_to_widths(model, candidate.keep, _at(cfg, candidate.imgsz),
                                batches(candidate.imgsz) if batches else None)[0] if candidate.pruned else model)

    def scored(candidate: Candidate, precision: str) -> Candidate:
        candidate.precision = precision
        widths = (candidate.imgsz, tuple(sorted(candidate.keep.items())))
        if widths not in proxies:  # the proxy is of the FP32 model: one per size and widths
            proxies[widths] = round(proxy(built(candidate), candidate.imgsz), 4)
        candidate.proxy_map = proxies[widths]
        candidate.score = round(candidate.proxy_map - (charge if precision == "int8" else 0.0), 4)
        return candidate

    for precision, predict in predictors.items():
        time_at = (lambda m, s, p=precision: timer(m, s, p)) if timer else None
        for imgsz in sizes.candidates:
            candidate = fit_size(model, imgsz, aim, predict, cfg, time_at, batches)
            if candidate is None:
                notes.append(f"{precision} {imgsz} px: no widths fit the budget")
                continue
            candidates.append(scored(candidate, precision))
            print(f"  budget plan {precision} {imgsz} px: {'pruned' if candidate.pruned else 'unpruned'}, predicted "
                  f"{candidate.predicted_ms:.2f} ms, proxy mAP50-95 {candidate.proxy_map:.3f}")
            if not candidate.pruned:
                break  # smaller sizes of an unpruned model that fits only lose accuracy
    if not candidates:
        raise EdgepruneError(f"latency budget {budget:g} ms: no candidate size fits after correction "
                             f"({', '.join(p.source for p in predictors.values())})", RAISE_BUDGET)
    chosen = choose(candidates)
    check, tight = verify or timer, aim
    while check is not None:
        precision = chosen.precision
        time_at = lambda m, s, p=precision: check(m, s, p)  # noqa: E731
        if chosen.measured_ms is not None:  # timed once: time it again before trusting it
            again = time_at(built(chosen), chosen.imgsz)
            if again <= budget:
                chosen.confirmed_ms = round(again, 3)
                break
            notes.append(f"{precision} {chosen.imgsz} px: timed {chosen.measured_ms:.2f} ms, then {again:.2f} ms "
                         "(over the budget) when timed again; corrected")
            tight *= budget / again  # each miss tightens the aim, so corrections cannot go round in circles
        corrected = fit_size(model, chosen.imgsz, tight, predictors[precision], cfg, time_at, batches)
        candidates.remove(chosen)
        if corrected is None:
            notes.append(f"{precision} {chosen.imgsz} px: timed over the budget and not correctable; next candidate")
        else:
            notes.append(f"{precision} {chosen.imgsz} px: predicted {chosen.predicted_ms:.2f} ms, timed here "
                         f"{corrected.measured_ms:.2f} ms after {corrected.corrections} correction(s)")
            candidates.append(scored(corrected, precision))
        if not candidates:
            raise EdgepruneError(f"latency budget {budget:g} ms: no candidate fits when timed here", RAISE_BUDGET)
        chosen = choose(candidates)
    return BudgetPlan(budget, predictors[chosen.precision].percentile, predictors[chosen.precision].source, sizes,
                      candidates, chosen, proxy_name, notes, margin)


RAISE_BUDGET = "raise budget.latency_ms (--budget) or prune to a FLOPs goal (--flops)"
PROXY_TIE = 0.01  # mAP50-95: closer than this, a val slice of tens of images cannot tell candidates apart


def choose(candidates: list[Candidate]) -> Candidate:
    """The best proxy score, and within PROXY_TIE of it the largest input size: a short fine-tune gives a pruned
    model back its channels' accuracy but a smaller input never gets its pixels back, so the proxy underrates
    pruned large-input candidates (bench-budget's --all-candidates rows)."""
    best = max(c.score for c in candidates)
    near = [c for c in candidates if c.score >= best - PROXY_TIE]
    return max(near, key=lambda c: (c.imgsz, c.score, -c.predicted_ms))


def anchored(predict: Predictor, model: nn.Module, sizes: Sizes, timer: Callable[[nn.Module, int], float]):
    """A predictor scaled so the unpruned model's prediction equals its timing here, at the largest size."""
    imgsz = sizes.largest
    measured, estimated = timer(model, imgsz), predict_module(model, imgsz, predict)
    scale = measured / estimated
    source = f"{predict.source}, scaled x{scale:.2f} to the unpruned model timed on this machine"
    return (predict.scaled(scale, source),
            f"{'table' if predict.measured else 'estimate'} anchored at {imgsz} px: measured {measured:.2f} ms vs "
            f"predicted {estimated:.2f} ms")
