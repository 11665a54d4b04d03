"""Would a recovery correction fix the budget proxy's bias? Checked leave-one-table-out on finished bench-budget runs.

The proxy (a 1-epoch fine-tune, then adaptive BN) underrates heavily pruned candidates, which recover most in
the full fine-tune. The simplest cure is to add the recovery it misses, `final - proxy`, modelled as linear in
the FLOPs reduction. Fitted on every run but one and applied to the one left out, it helps only if it ranks
that run's rows better than the raw proxy did: Spearman over its rows, and per budget whether the row scored
best was the best artefact. Two fits: on the rows the plan's own candidates resemble ((a) knapsack widths and
(c) the unpruned model) and on every row ((b) uniform pruning too, whose 1-epoch scores are far lower).

    python -m benchmarks.proxy_correction --runs bench/budget bench/budget-ort bench/budget26 bench/budget26-ort \
        --out bench/proxy-correction
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.report import publish
from edgeprune.budget.plan import Candidate, choose

FITS = {"a, c": "ac", "a, b, c": "abc"}  # label -> the row letters the recovery is fitted on


@dataclass
class Run:
    rows: list[dict]  # the trained rows that have a proxy score
    plans: dict[float, list[dict]]  # budget fraction -> the plan's candidates (proxy, FLOPs reduction, size)


def load_run(run: Path) -> tuple[str, Run]:
    """(name, rows and plans) of one finished bench-budget run (its folder or budget.json)."""
    path = run / "budget.json" if run.is_dir() else run
    result = json.loads(path.read_text())["results"][0]
    rows = [{"key": r["key"], "fraction": r["budget_fraction"], "row": r["row"][0],
             "reduction": r.get("flops_reduction") or 0.0, "proxy": r["proxy_map"], "final": r["map50_95"]}
            for r in result["rows"] if r.get("proxy_map") is not None]
    plans = {b["fraction"]: b["plan"]["candidates"] for b in result["budgets"] if b.get("plan")}
    return f"{result['family']} {result['runtime']}", Run(rows, plans)


def fit_recovery(rows: list[dict], letters: str) -> tuple[float, float]:
    """Least squares `final - proxy = intercept + slope * reduction` over the rows whose letter is in `letters`."""
    used = [r for r in rows if r["row"] in letters]
    if len({r["reduction"] for r in used}) < 2:
        raise ValueError(f"need rows at two FLOPs reductions or more to fit a slope (rows {letters}: {len(used)})")
    x = np.array([r["reduction"] for r in used])
    y = np.array([r["final"] - r["proxy"] for r in used])
    intercept, slope = np.linalg.lstsq(np.vstack([np.ones_like(x), x]).T, y, rcond=None)[0]
    return float(intercept), float(slope)


def ranking(rows: list[dict], score) -> dict:
    """Spearman of `score` against the final mAP, and per budget whether its best row was the best artefact."""
    from scipy.stats import spearmanr

    distinct = list({r["key"]: r for r in rows}.values())  # one row trained once counts once
    rho = float(spearmanr([score(r) for r in distinct], [r["final"] for r in distinct]).statistic)
    hits = budgets = 0
    for fraction in sorted({r["fraction"] for r in rows}):
        group = [r for r in rows if r["fraction"] == fraction]
        if len(group) > 1:
            budgets += 1
            hits += max(group, key=score)["final"] == max(r["final"] for r in group)
    return {"spearman": round(rho, 3), "best_picked": hits, "budgets": budgets}


def changed_choices(plans: dict[float, list[dict]], intercept: float, slope: float) -> list[str]:
    """The budgets at which the plan, ranking its own candidates by the corrected proxy, would choose otherwise."""
    def candidate(c: dict, recovery: float) -> Candidate:
        return Candidate(c["imgsz"], c["pruned"], {}, c["predicted_ms"], flops_reduction=c["flops_reduction"],
                         score=c["score"] + recovery)

    def label(c: Candidate) -> str:
        return f"{c.imgsz} px -{c.flops_reduction:.0%}"

    changed = []
    for fraction, candidates in sorted(plans.items()):
        before = choose([candidate(c, 0.0) for c in candidates])
        after = choose([candidate(c, intercept + slope * c["flops_reduction"]) for c in candidates])
        if (before.imgsz, before.flops_reduction) != (after.imgsz, after.flops_reduction):
            changed.append(f"{fraction:g}: {label(before)} -> {label(after)}")
    return changed


def held_out(runs: dict[str, Run], letters: str) -> list[dict]:
    out = []
    for name, run in runs.items():
        others = [r for other, more in runs.items() if other != name for r in more.rows]
        intercept, slope = fit_recovery(others, letters)
        out.append({"held_out": name, "intercept": round(intercept, 4), "slope": round(slope, 4),
                    "raw": ranking(run.rows, lambda r: r["proxy"]),
                    "corrected": ranking(run.rows, lambda r: r["proxy"] + intercept + slope * r["reduction"]),
                    "plan_choice_changed": changed_choices(run.plans, intercept, slope)})
    return out


def markdown(result: dict, command: str) -> str:
    lines = [f"`{command}`", "", "| fitted on rows | held-out run | slope (points per unit FLOPs reduction) "
             "| Spearman raw → corrected | best row picked raw → corrected | plan's choice changed |",
             "|---|---|---|---|---|---|"]
    for label, checks in result["fits"].items():
        for c in checks:
            raw, cor = c["raw"], c["corrected"]
            lines.append(f"| {label} | {c['held_out']} | {100 * c['slope']:+.1f} | {raw['spearman']:+.2f} → "
                         f"{cor['spearman']:+.2f} | {raw['best_picked']}/{raw['budgets']} → "
                         f"{cor['best_picked']}/{cor['budgets']} | {'; '.join(c['plan_choice_changed']) or 'none'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="finished bench-budget folders")
    parser.add_argument("--out", type=Path, default=Path("bench/proxy-correction"))
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("leave-one-out needs two runs or more")
    runs = dict(load_run(run) for run in args.runs)
    result = {"runs": [str(r) for r in args.runs],
              "fits": {label: held_out(runs, letters) for label, letters in FITS.items()}}
    command = "python -m benchmarks.proxy_correction " + " ".join(argv if argv is not None else sys.argv[1:])
    publish(args.out, "proxy-correction", result, markdown(result, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
