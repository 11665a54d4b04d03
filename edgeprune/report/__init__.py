"""report.md, report.html and their plots: what compression bought, in the target's runtime, like with like.

The first table compares the unpruned baseline with the deployed model, both exported with the same
recipe and timed side by side in the target's runtime on this host; device results, once fed back with
`edgeprune validate`, replace the host numbers of the model they measured, with the estimate kept beside.
PyTorch timings stay as a secondary, labelled column. Everything is drawn from metadata.json.
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.manifest import atomic_write_text
from edgeprune.report import plots
from edgeprune.report.document import Bullets, Heading, Image, Paragraph, Table, to_html, to_markdown
from edgeprune.report.rows import METRIC, comparison_rows, report_rows, speedup
from edgeprune.targets import Target

__all__ = ["comparison_rows", "report_rows", "write_report", "speedup", "FIGURES"]

FIGURES = {"accuracy_latency": "report.png", "widths": "widths.png", "guard": "guard.png", "budget": "budget.png"}


def _mb(size: int | None) -> str:
    return f"{size / 1e6:.2f} MB" if size else ""


def _measured(device_results: list[dict]) -> list[dict]:
    """Device results that are measurements (dry runs check the script, their timings mean nothing)."""
    return [r for r in device_results if not r.get("dry_run")]


def comparison_table(comparison: list[dict], target: Target, device_results: list[dict]) -> Table:
    ratio = speedup(comparison)
    measured = _measured(device_results)
    pct = target.budget.percentile
    rows = []
    for row in comparison:
        estimate = (row.get("device_estimate") or {}).get("estimate_ms")
        if row["key"] == "compressed" and measured:
            last = measured[-1]
            e2e = last["latency_ms"][last["budget"]["on"]]
            source = f"**device**: {last['device'].get('machine', '?')}, {last['runtime']} {last['runtime_version'] or ''}"
            p50, p_budget = e2e["p50"], last["budget"]["measured_ms"]
        else:
            source = f"host: {row['runtime']}"
            p50, p_budget = row["latency_p50_ms"], row.get("latency_p90_ms")
        speed = "1.00x" if row["key"] == "baseline" else (f"**{ratio:.2f}x**" if ratio else "n/a")
        rows.append((f"**{row['label']}**" if row["key"] == "compressed" else row["label"],
                     f"{row['map50_95']:.3f}", f"{row['map50']:.3f}", f"{row['params'] / 1e6:.2f} M",
                     f"{row['gflops']:.3f}", _mb(row["size_bytes"]), source, f"{p50:.2f}",
                     "" if p_budget is None else f"{p_budget:.2f}", speed,
                     f"{estimate:.2f}" if estimate else "", f"{row['pytorch_p50_ms']:.2f}"))
    return Table(("model", "mAP50-95", "mAP50", "params", "GFLOPs", "file", "latency from", "p50 ms",
                  f"p{pct if measured else 90} ms", "speed-up vs baseline (host, side by side)",
                  "device estimate ms (roofline)", "PyTorch FP32 p50 ms (secondary)"), tuple(rows))


def stage_table(rows: list[dict]) -> Table:
    base = rows[0]
    return Table(("stage", "mAP50-95", "mAP50", "params", "GFLOPs", "FLOPs vs baseline", "host p50 ms", "runtime",
                  "file"),
                 tuple((r["label"], f"{r['map50_95']:.3f}", f"{r['map50']:.3f}", f"{r['params'] / 1e6:.3f} M",
                        f"{r['gflops']:.3f}", f"{r['gflops'] / base['gflops']:.0%}", f"{r['latency_p50_ms']:.2f}",
                        r["runtime"], _mb(r.get("size_bytes"))) for r in rows))


def prediction_error(prediction: dict | None, budget: dict) -> str:
    """How far the deploy-time prediction was from this measurement, at the budget's percentile."""
    predicted = (prediction or {}).get(f"p{budget.get('percentile')}_ms")
    measured = budget.get("measured_ms")
    if not predicted or not measured:
        return ""
    return f" Predicted {predicted} ms: {predicted / measured - 1:+.0%} off."


def replan_hint(target: Target, result: dict) -> str:
    """A measured miss of the budget: the plan should come from the device's own latency table."""
    budget = result.get("budget", {})
    if result.get("dry_run") or budget.get("pass") is not False:
        return ""
    return (f" The device misses the budget: time a probe on it (`edgeprune latency probe --target {target.name}`, "
            f"then probe_latency.py) and re-plan with `make deploy TARGET={target.name} LATENCY_TABLE=<its table>`.")


def device_lines(target: Target, estimate: dict | None, device_results: list[dict],
                 prediction: dict | None = None) -> list[str]:
    lines = []
    if estimate:
        verdict = "within" if estimate["estimate_ms"] <= target.budget.latency_ms else "over"
        lines.append(f"**Estimate** ({estimate['label']}): {estimate['estimate_ms']:.2f} ms, {estimate['bound']}-bound "
                     f"(compute {estimate['compute_ms']:.2f} ms at {estimate['utilisation_assumed']:.0%} of peak, "
                     f"memory {estimate['memory_ms']:.2f} ms) — {verdict} budget.")
    if prediction:
        lines.append(f"**Predicted** ({prediction['source']}): p50 {prediction['p50_ms']} ms, "
                     f"p{target.budget.percentile} {prediction.get(f'p{target.budget.percentile}_ms', '?')} ms.")
    for m in device_results:
        b = m.get("budget", {})
        lines.append(f"**Measured** on {m.get('device', {}).get('machine', '?')} ({m.get('runtime')}, "
                     f"{m.get('timestamp', '')}): p{b.get('percentile')} {b.get('measured_ms')} ms — "
                     f"{'PASS' if b.get('pass') else 'FAIL'}{' (dry run: timings not used)' if m.get('dry_run') else ''}."
                     + prediction_error(prediction, b) + replan_hint(target, m))
    if not device_results:
        lines.append("No device measurement yet: run the bundle's validate script on the device and feed the JSON "
                     "back with `edgeprune validate <bundle> --results <file>`.")
    return lines


def is_chosen(candidate: dict, plan: dict) -> bool:
    chosen = plan["chosen"]
    return all(candidate.get(k) == chosen.get(k) for k in ("imgsz", "pruned", "precision"))


def budget_table(plan: dict) -> Table:
    """One row per candidate (precision, input size) the budget search kept."""
    rows = [(f"{c['imgsz']} px" + (" (chosen)" if is_chosen(c, plan) else ""), c.get("precision", ""),
             "pruned" if c["pruned"] else "unpruned", f"{c['flops_reduction']:.0%}", f"{c['predicted_ms']:.2f}",
             "" if c.get("measured_ms") is None else f"{c['measured_ms']:.2f}", f"{c['proxy_map']:.3f}")
            for c in plan["candidates"]]
    return Table(("input size", "precision", "compression", "FLOPs removed", f"predicted {plan['percentile']} ms",
                  "timed here ms", "proxy mAP50-95"), tuple(rows))


def blocks(meta: dict, target: Target) -> list:
    comparison, rows = meta.get("comparison") or [], meta["report"]
    device_results = meta.get("device_results", [])
    out = [Heading(f"edgeprune report — target `{target.name}`", 1), Paragraph(target.description)]
    if comparison:
        ratio = speedup(comparison)
        base, deployed = comparison
        runtime = deployed["runtime"]
        out += [Heading(f"What compression bought on `{target.name}`: {target.recipe.precision.upper()} in {runtime}"),
                comparison_table(comparison, target, device_results),
                Paragraph(f"Both rows are `{target.recipe.precision}` artefacts exported with the same recipe (INT8 guard "
                          f"choice `{base['recipe']}`) and measured by running the file: {METRIC}. "
                          + (f"Host latencies were timed side by side in interleaved turns in one process: the "
                             f"deployed model is **{ratio:.2f}x** as fast as the unpruned baseline, at "
                             f"{deployed['map50_95'] - base['map50_95']:+.3f} mAP50-95."
                             if base["side_by_side"] and ratio else
                             "This host cannot run the format, so latency is the labelled proxy.")),
                Image(FIGURES["accuracy_latency"], "accuracy vs latency, with the latency budget")]
    out += [Heading("Device latency"),
            Paragraph(f"Budget on {target.device.hardware.device or target.name}: p{target.budget.percentile} ≤ "
                      f"{target.budget.latency_ms} ms."),
            Bullets(tuple(device_lines(target, meta.get("device_estimate"), device_results, meta.get("latency_prediction")))),
            Heading("Stages (PyTorch FP32 on this host; secondary — compare rows above for the target)"),
            stage_table(rows)]
    plan = meta.get("budget_plan")
    if plan:
        out += [Heading("How the compression was chosen: the latency budget"), Paragraph(plan["reason"]),
                budget_table(plan), *[Paragraph(f"Note: {n}") for n in plan.get("notes", [])],
                Image(FIGURES["budget"], "budget search candidates")]
    if meta.get("pruned_widths"):
        out += [Heading("Kept channels per layer"), Image(FIGURES["widths"], "output channels per layer")]
    guard = (meta.get("quantization") or {}).get("accuracy_guard")
    if guard:
        out += [Heading("INT8 accuracy guard"), Image(FIGURES["guard"], "INT8 guard levels")]
    out += [Heading("Notes"), Bullets(tuple(meta.get("notes", [])))]
    return out


def write_report(folder: Path, meta: dict, target: Target) -> Path:
    """Draw the figures, then write report.md and report.html beside them."""
    if meta.get("comparison"):
        plots.accuracy_latency(meta["comparison"], _measured(meta.get("device_results", [])),
                               target.budget.latency_ms, target.budget.percentile, target.name,
                               folder / FIGURES["accuracy_latency"])
    if meta.get("budget_plan"):
        plots.budget_candidates(meta["budget_plan"], folder / FIGURES["budget"])
    if meta.get("pruned_widths"):
        plots.layer_widths(meta["pruned_widths"], folder / FIGURES["widths"])
    guard = (meta.get("quantization") or {}).get("accuracy_guard")
    if guard:
        plots.guard_levels(guard, folder / FIGURES["guard"])
    document = blocks(meta, target)
    atomic_write_text(folder / "report.md", to_markdown(document))
    atomic_write_text(folder / "report.html", to_html(document, folder, f"edgeprune report — {target.name}"))
    return folder / "report.md"
