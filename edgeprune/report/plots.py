"""The report's figures: accuracy vs latency with the budget, kept widths per layer, the INT8 guard's levels.

Each function draws one figure from report data (never from a live model) and writes a PNG atomically,
so `edgeprune validate` can redraw them from metadata.json alone.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from edgeprune.manifest import atomic_write_bytes

HOST, DEVICE, ESTIMATE = "tab:blue", "tab:green", "tab:gray"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def _label(ax, x: float, y: float, text: str, color: str, below: bool) -> None:
    """A boxed label joined to its point by a thin line, above-right or below-right of it, so two close points
    never swap labels."""
    ax.annotate(text, (x, y), textcoords="offset points", xytext=(16, -30) if below else (16, 26),
                ha="left", fontsize=9, color=color,
                bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": color, "lw": 0.6, "alpha": 0.95},
                arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6})


def accuracy_latency(comparison: list[dict], device: list[dict], budget_ms: float, percentile: int, target: str,
                     out: Path) -> Path:
    """mAP of each artefact against its latency: host (target runtime), device when measured, and the estimate.

    Log-scaled latency, so millisecond host timings and a tens-of-milliseconds budget share one readable axis.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5))
    xs, ys = [budget_ms], []
    for i, row in enumerate(comparison):
        x, y = row["latency_p50_ms"], row["map50_95"]
        ax.scatter(x, y, s=70, color=HOST, zorder=3, label="this host, target runtime (p50)" if i == 0 else None)
        _label(ax, x, y, f"{row['label']}: {x:.2f} ms", HOST, below=row["key"] == "baseline")
        xs.append(x)
        ys.append(y)
        estimate = (row.get("device_estimate") or {}).get("estimate_ms")
        if estimate:
            ax.scatter(estimate, y, s=70, facecolors="none", edgecolors=ESTIMATE, zorder=3,
                       label="device estimate (roofline, not measured)" if i == 0 else None)
            ax.plot([x, estimate], [y, y], color=ESTIMATE, lw=0.6, ls=":", zorder=2)
            xs.append(estimate)
    if len(comparison) == 2:
        (x0, y0), (x1, y1) = ((r["latency_p50_ms"], r["map50_95"]) for r in comparison)
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": HOST, "lw": 1.2})
    deployed = comparison[-1]
    for j, result in enumerate(device):
        measured = (result.get("budget") or {}).get("measured_ms")
        if measured is None:
            continue
        ax.scatter(measured, deployed["map50_95"], s=90, marker="D", color=DEVICE, zorder=4,
                   label=f"device, measured (p{percentile:g})" if j == 0 else None)
        _label(ax, measured, deployed["map50_95"], f"{result.get('device', {}).get('machine', 'device')}: "
                                                   f"{measured:.1f} ms", DEVICE, below=True)
        xs.append(measured)
    ax.axvline(budget_ms, color="tab:red", ls="--", lw=1.2, label=f"budget: p{percentile} ≤ {budget_ms:g} ms (device)")
    ax.set_xscale("log")
    low, high = min(xs) / 1.8, max(xs) * 1.8
    ax.set_xlim(low, high)
    ticks = [t * 10 ** e for e in range(-2, 5) for t in (1, 2, 5) if low <= t * 10 ** e <= high]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(max(0.0, min(ys) - 0.05), max(ys) + 0.04)
    ax.set_xlabel("latency, ms (batch 1, log scale)")
    ax.set_ylabel("mAP50-95 of the artefact (val)")
    ax.set_title(f"{target}: accuracy vs latency — host timings are not device timings")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.95)
    return _save(fig, out)


def _short(name: str) -> str:
    return re.sub(r"^model\.", "", name)


def layer_widths(widths: dict[str, list[int]], out: Path) -> Path:
    """Output channels per conv before and after pruning (locked layers show as full bars)."""
    plt = _pyplot()
    names = list(widths)
    before = [widths[n][0] for n in names]
    after = [widths[n][1] for n in names]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.16 * len(names)), 4.2))
    positions = range(len(names))
    ax.bar(positions, before, color="#d9d9d9", width=0.85, label="before pruning")
    ax.bar(positions, after, color="tab:blue", width=0.85, label="kept")
    ax.set_xticks(list(positions))
    ax.set_xticklabels([_short(n) for n in names], rotation=90, fontsize=6)
    ax.set_ylabel("output channels")
    kept = sum(after) / max(1, sum(before))
    ax.set_title(f"output channels per prunable conv: {kept:.0%} kept (locked convs are not shown)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)


def guard_levels(guard: dict, out: Path) -> Path:
    """mAP of every INT8 candidate the guard measured, against the FP32 reference and the allowed drop."""
    plt = _pyplot()
    tried = guard["tried"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(tried)), 4))
    reference, floor = guard["reference_map50_95"], guard["reference_map50_95"] - guard["max_drop"]
    chosen = guard["chosen"]
    measured = [t["map50_95"] for t in tried if t["map50_95"] is not None]
    kept = max(measured) if measured else None  # the guard keeps its most accurate candidate
    for i, t in enumerate(tried):
        if t["map50_95"] is None:
            ax.text(i, floor, "failed", ha="center", va="bottom", fontsize=8, color="tab:red")
            continue
        ax.bar(i, t["map50_95"], color="tab:green" if t["map50_95"] == kept else "tab:blue", width=0.6)
        ax.text(i, t["map50_95"], f"{t['map50_95']:.3f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(reference, color="black", lw=1, label=f"FP32 model {reference:.3f}")
    ax.axhline(floor, color="tab:red", ls="--", lw=1, label=f"allowed drop {guard['max_drop']:.3f}")
    ax.set_xticks(range(len(tried)))
    ax.set_xticklabels([t["float_scope"] for t in tried], fontsize=8)
    low = min(measured + [floor])
    ax.set_ylim(max(0.0, low - 0.05), reference + 0.03)
    ax.set_xlabel("what stays in float (guard level, tried left to right)")
    ax.set_ylabel("mAP50-95 of the INT8 artefact")
    ax.set_title(f"INT8 accuracy guard: kept {chosen} (green)")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)


def budget_candidates(plan: dict, out: Path) -> Path:
    """The budget search's candidates: predicted latency vs proxy accuracy, the budget line, the chosen point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    chosen = plan["chosen"]
    several = len({c.get("precision") for c in plan["candidates"]}) > 1
    for c in plan["candidates"]:
        is_chosen = all(c.get(k) == chosen.get(k) for k in ("imgsz", "pruned", "precision"))
        color = "tab:green" if is_chosen else HOST
        ax.scatter(c["predicted_ms"], c["proxy_map"], color=color, s=60 if is_chosen else 30, zorder=3,
                   marker="s" if several and c.get("precision") != "int8" else "o")
        what = (f"{c.get('precision')} " if several else "") + f"{c['imgsz']} px, " + (
            f"-{c['flops_reduction']:.0%} FLOPs" if c["pruned"] else "unpruned")
        _label(ax, c["predicted_ms"], c["proxy_map"], what + (" (chosen)" if is_chosen else ""), color, False)
    ax.axvline(plan["budget_ms"], color="tab:red", ls="--", lw=1, label=f"budget {plan['budget_ms']:g} ms")
    ax.set_xlim(0, plan["budget_ms"] * 1.15)
    ax.set_xlabel(f"predicted {plan['percentile']} latency, ms ({plan['source']})", fontsize=8)
    ax.set_ylabel("proxy mAP50-95 (adaptive BN)")
    ax.set_title("budget search: candidates per input size" + (" and precision" if several else ""))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out)
