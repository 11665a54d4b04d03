"""Find the channel plan whose kept FLOPs are closest to a goal.

Kept FLOPs fall in steps as the pruned fraction grows: channel counts are rounded to multiples of
round_to, and YOLO's power-of-two widths all round at the same fractions, so one step can be ten
points of FLOPs wide (yolo11n: 22 % -> 39 % between fractions 0.24 and 0.25). Bisection over the
fraction alone therefore stalls on the edge of a step. The search has two phases:

1. bisection over the fraction in [0, max_fraction] finds the two neighbouring plans around the goal,
   the wider one (kept >= goal) and the narrower one (kept < goal);
2. the groups that differ between them move, one unit at a time, from the wider width to the narrower
   one (least important first, order given by the caller), bisecting over how many move.

Plans are cached, so a fraction that maps to an already measured plan costs nothing; `max_trials`
bounds the distinct plans measured (each costs one pruning and a FLOPs count). The best plan seen is
returned even when none lands within the tolerance (e.g. a goal beyond what locked layers allow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

Plan = dict[str, int]  # group root name -> channels kept
MAX_FRACTION = 0.95
_BISECTIONS = 40  # cheap: repeated plans are cached; only distinct plans count against max_trials


@dataclass
class Probe:
    plan: Plan
    fraction: float  # the searched fraction this plan stands for (interpolated inside a step)
    kept: float  # MACs after / MACs before
    payload: Any  # whatever `measure` returned besides `kept` (the pruned model and its record)


def search(plan_for: Callable[[float], Plan], measure: Callable[[Plan], tuple[float, Any]], goal: float,
           tolerance: float, max_trials: int, first_guess: float,
           step_moves: Callable[[Plan, Plan], list[Plan]]) -> Probe:
    """Return the probe whose kept fraction is nearest `goal` (stops early once within `tolerance`)."""
    cache: dict[tuple, Probe] = {}
    best: Probe | None = None

    def probe(plan: Plan, fraction: float) -> Probe | None:
        nonlocal best
        key = tuple(sorted(plan.items()))
        if key not in cache:
            if len(cache) >= max_trials:
                return None
            kept, payload = measure(plan)
            cache[key] = Probe(plan, fraction, kept, payload)
            if best is None or abs(kept - goal) < abs(best.kept - goal):
                best = cache[key]
        return cache[key]

    def done(p: Probe | None) -> bool:
        return p is None or abs(p.kept - goal) <= tolerance

    lo, hi = 0.0, MAX_FRACTION
    wide = narrow = None  # nearest probes with kept >= goal and kept < goal
    fraction = min(max(first_guess, lo), hi)
    for _ in range(_BISECTIONS):
        p = probe(plan_for(fraction), fraction)
        if done(p):
            return best
        if p.kept >= goal:
            lo, wide = fraction, p
        else:
            hi, narrow = fraction, p
        if hi - lo < 1e-4:
            break
        fraction = (lo + hi) / 2
    if narrow is not None and wide is None:  # every probe was too narrow: the unpruned side bounds the step
        wide = probe(plan_for(0.0), 0.0)
        if done(wide) or wide.kept < goal:
            return best
    if wide is None or narrow is None:
        return best  # the goal lies beyond the widest fraction: nothing narrower exists
    moves = step_moves(wide.plan, narrow.plan)
    lo_k, hi_k = 0, len(moves)
    while hi_k - lo_k > 1:
        k = (lo_k + hi_k) // 2
        plan = dict(wide.plan)
        for move in moves[:k]:
            plan.update(move)
        p = probe(plan, wide.fraction + (narrow.fraction - wide.fraction) * k / len(moves))
        if done(p):
            return best
        lo_k, hi_k = (k, hi_k) if p.kept >= goal else (lo_k, k)
    return best
