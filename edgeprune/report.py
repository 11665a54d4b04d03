"""report.md and report.png: one row per stage, the artefact measured by running it."""

from __future__ import annotations

from pathlib import Path

from edgeprune.manifest import atomic_write_bytes, atomic_write_text
from edgeprune.targets import Target

STAGE_LABELS = {"baseline": "baseline (PyTorch FP32)", "prune": "pruned, before fine-tuning (PyTorch FP32)",
                "finetune": "pruned + fine-tuned (PyTorch FP32)"}


def report_rows(metrics: dict[str, dict], target: Target, artefact: Path) -> list[dict]:
    rows = []
    for stage, m in metrics.items():
        label = STAGE_LABELS.get(stage, f"{target.precision.upper()} {artefact.name} ({m.get('runtime', '')})")
        last_torch = [r for r in rows if "params" in r]
        rows.append({
            "stage": stage, "label": label, "map50_95": m["map50_95"], "map50": m["map50"],
            "params": m.get("params", last_torch[-1]["params"] if last_torch else 0),
            "gflops": m.get("gflops", last_torch[-1]["gflops"] if last_torch else 0),
            "latency_p50_ms": m["latency"]["p50_ms"], "runtime": m.get("runtime", ""),
            "size_bytes": m.get("size_bytes"),
        })
    return rows


def device_section(target: Target, estimate: dict | None, measured: list[dict]) -> list[str]:
    budget = f"p{target.latency_percentile} ≤ {target.latency_budget_ms} ms"
    lines = ["## Device latency", "", f"Budget on {target.hardware.device or target.name}: {budget}.", ""]
    if estimate:
        verdict = "within" if estimate["estimate_ms"] <= target.latency_budget_ms else "over"
        lines.append(f"- **Estimate** ({estimate['label']}): {estimate['estimate_ms']:.2f} ms, {estimate['bound']}-bound "
                     f"(compute {estimate['compute_ms']:.2f} ms at {estimate['utilisation_assumed']:.0%} of peak, "
                     f"memory {estimate['memory_ms']:.2f} ms) — {verdict} budget.")
    for m in measured:
        b = m.get("budget", {})
        lines.append(f"- **Measured** on {m.get('device', {}).get('machine', '?')} ({m.get('runtime')}, "
                     f"{m.get('timestamp', '')}): p{b.get('percentile')} {b.get('measured_ms')} ms — "
                     f"{'PASS' if b.get('pass') else 'FAIL'}{' (dry run)' if m.get('dry_run') else ''}.")
    if not measured:
        lines.append("- No device measurement yet: run the bundle's validate script on the device and feed the JSON "
                     "back with `edgeprune validate <bundle> --results <file>`.")
    return lines + [""]


def markdown(rows: list[dict], target: Target, notes: list[str], device: list[str] | None = None) -> str:
    base = rows[0]
    lines = [f"# edgeprune report — target `{target.name}`", "", target.description, "",
             "| stage | mAP50-95 | mAP50 | params | GFLOPs | FLOPs vs baseline | host p50 ms | runtime | file |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['size_bytes'] / 1e6:.2f} MB" if r.get("size_bytes") else ""
        lines.append(f"| {r['label']} | {r['map50_95']:.3f} | {r['map50']:.3f} | {r['params'] / 1e6:.3f} M | "
                     f"{r['gflops']:.3f} | {r['gflops'] / base['gflops']:.0%} | {r['latency_p50_ms']:.2f} | "
                     f"{r['runtime']} | {size} |")
    lines += ["", "![mAP vs compute](report.png)", ""] + (device or []) + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for r in rows:
        ax1.scatter(r["gflops"], r["map50_95"], s=60)
        ax1.annotate(r["stage"], (r["gflops"], r["map50_95"]), textcoords="offset points", xytext=(5, 5))
    ax1.set_xlabel("GFLOPs")
    ax1.set_ylabel("mAP50-95 (val)")
    ax1.set_title("accuracy vs compute")
    ax1.grid(alpha=0.3)
    ax2.bar([r["stage"] for r in rows], [r["latency_p50_ms"] for r in rows], color="tab:orange")
    ax2.set_ylabel("host latency p50 (ms)")
    ax2.set_title("host latency (this machine, not the device)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())


def write_report(rows: list[dict], target: Target, folder: Path, notes: list[str],
                 device: list[str] | None = None) -> Path:
    plot(rows, folder / "report.png")
    atomic_write_text(folder / "report.md", markdown(rows, target, notes, device))
    return folder / "report.md"
