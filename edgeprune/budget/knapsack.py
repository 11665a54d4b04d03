"""Channel widths that keep the most importance within a latency budget: a knapsack over channel groups.

Each prunable group (split halves joined into one item, so they stay equally wide) has a ladder of
widths on the `round_to` grid, from all its channels down to a floor. Stepping an item one rung down
costs the importance of the channels it drops (the survey's per-group normalised scores, lowest first)
and saves the predicted latency of the convs those channels feed and come from, priced exactly on the
conv census at the current widths of every other group. Greedy by importance lost per millisecond
saved, re-pricing only the items that share a conv with the one just stepped (all of them when the
prediction is not a sum, as a roofline's max() is not), until the prediction fits
(HALP's latency-aware knapsack idea, written here from its description: the budget is met by
construction, not checked afterwards). Locked convs never move; a group keeps at least
`1 - max_group_ratio` of its channels (the range the latency probe measured) and `min_channels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from edgeprune.budget.costs import Census, Predictor
from edgeprune.latency.features import STRIDES


@dataclass
class Allocation:
    keep: dict[str, int]  # group root -> channels kept
    predicted_ms: float
    kept_importance: float  # fraction of the total importance kept
    fits: bool
    steps: int = 0
    floor_ms: float = 0.0  # the prediction with every item at its floor (what no plan can beat)
    log: list = field(default_factory=list)


def ladder(channels: int, round_to: int, min_channels: int, max_ratio: float) -> list[int]:
    """Widths a group may take, widest first: all channels, then round_to multiples down to its floor."""
    floor = max(min_channels, math.ceil(channels * (1 - max_ratio) / round_to - 1e-9) * round_to)
    rungs = {channels} | {k * round_to for k in range(1, channels // round_to + 1) if floor <= k * round_to < channels}
    return sorted((r for r in rungs if r >= min(floor, channels)), reverse=True)


class _State:
    """Current widths of every conv and the features they add up to."""

    def __init__(self, census: Census, survey, budget_keep: dict[str, int]):
        self.census, self.survey = census, survey
        self.cin, self.cout = census.widths(survey.channels, budget_keep, survey.effects)
        self.features = census.features(self.cin, self.cout)

    def delta(self, members: list[str], before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
        """Feature change when `members` go from `before` to `after` channels."""
        cin, cout = dict(), dict()
        for m in members:
            for conv, side, times in self._effects(m):
                target = cout if side == "out" else cin
                target[conv] = target.get(conv, 0) + times * (before[m] - after[m])
        delta: dict[str, float] = {}
        for conv in set(cin) | set(cout):
            c = self.census.convs[conv]
            old = self.census.contribution(conv, self.cin[conv], self.cout[conv])
            new = self.census.contribution(conv, self.cin[conv] - cin.get(conv, 0), self.cout[conv] - cout.get(conv, 0))
            for key, o, n in ((f"gmacs_s{c.stride}", old[0], new[0]), (f"mact_s{c.stride}", old[1], new[1]),
                              ("params", old[2], new[2])):
                delta[key] = delta.get(key, 0.0) + n - o
        return delta

    def apply(self, members: list[str], before: dict[str, int], after: dict[str, int]) -> None:
        for key, value in self.delta(members, before, after).items():
            self.features[key] += value
        for m in members:
            for conv, side, times in self._effects(m):
                (self.cout if side == "out" else self.cin)[conv] -= times * (before[m] - after[m])

    def _effects(self, member: str) -> list[tuple[str, str, int]]:
        """The member's effects on convs the deployed graph runs (the census holds only those)."""
        return [e for e in self.survey.effects[member] if e[0] in self.census.convs]

    def shifted(self, delta: dict[str, float]) -> dict[str, float]:
        return {k: v + delta.get(k, 0.0) for k, v in self.features.items()}


def _items(survey) -> list[list[str]]:
    """Groups that move together: split halves as one item; a half whose partner is locked stays whole."""
    pinned, joined, items = set(), set(), []
    for a, b in survey.pairs:
        if a is None or b is None:
            pinned.update(r for r in (a, b) if r is not None)
        elif a != b:
            items.append([a, b])
            joined.update((a, b))
    items += [[n] for n in survey.channels if n not in joined and n not in pinned]
    return [item for item in items if not any(m in survey.fixed for m in item)]


def allocate(survey, census: Census, predict: Predictor, budget_ms: float, round_to: int, min_channels: int = 8,
             max_group_ratio: float = 0.75, comparable: bool = False) -> Allocation:
    """The widths the greedy knapsack keeps for `budget_ms` (predicted at `predict.percentile`). `comparable`: the
    survey's raw scores compare across groups (a loss-based criterion) and are the items' values; otherwise each
    group's scores divided by their mean are."""
    keep = dict(survey.channels)
    items = _items(survey)
    ladders = {id(item): {m: ladder(survey.channels[m], *survey.rounding(m, round_to, min_channels), max_group_ratio)
                          for m in item} for item in items}
    values = survey.raw if comparable else survey.scores
    ordered = {m: torch.sort(values[m]).values for m in survey.channels}
    total = float(sum(s.sum() for s in ordered.values())) or 1.0
    lost = 0.0
    state = _State(census, survey, keep)

    def next_rung(item) -> dict[str, int] | None:
        rungs = [r for r in ladders[id(item)][item[0]] if r < keep[item[0]]]
        return {m: rungs[0] for m in item} if rungs else None

    def price(item) -> tuple[float, float, dict[str, int]] | None:
        after = next_rung(item)
        if after is None:
            return None
        value = sum(float(ordered[m][survey.channels[m] - keep[m]: survey.channels[m] - after[m]].sum()) for m in item)
        saved = current - predict(state.shifted(state.delta(item, keep, after)))
        return value, saved, after

    floor_keep = {m: ladders[id(item)][m][-1] for item in items for m in item}
    floor_ms = predict(_State(census, survey, {**keep, **floor_keep}).features)
    current = predict(state.features)
    prices = {id(item): price(item) for item in items}
    by_id = {id(item): item for item in items}
    steps, touched_by = 0, {}
    for item in items:
        for m in item:
            for conv, *_ in survey.effects[m]:
                touched_by.setdefault(conv, set()).add(id(item))
    while current > budget_ms:
        useful = [(v / s, key) for key, p in prices.items() if p is not None for v, s, _ in [p] if s > 1e-9]
        if not useful:
            break
        _, key = min(useful)
        item, (value, _, after) = by_id[key], prices[key]
        state.apply(item, keep, after)
        keep.update(after)
        lost += value
        current = predict(state.features)
        steps += 1
        stale = (prices.keys() if not predict.additive  # a roofline's max() moves every item's saving
                 else {i for m in item for conv, *_ in survey.effects[m] for i in touched_by[conv]})
        for i in stale:
            prices[i] = price(by_id[i])
    return Allocation(keep, round(current, 4), round(1 - lost / total, 4), current <= budget_ms, steps,
                      round(floor_ms, 4))
