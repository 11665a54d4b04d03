"""The report compares like with like, draws its figures, and writes one self-contained HTML file."""

from __future__ import annotations

import re

from PIL import Image

from edgeprune.report import FIGURES, comparison_rows, write_report
from edgeprune.targets import load_target


def _stage_rows():
    def row(stage, m, gflops, params, ms):
        return {"stage": stage, "label": stage, "map50_95": m, "map50": m + 0.1, "params": params, "gflops": gflops,
                "latency_p50_ms": ms, "runtime": "pytorch (2 threads)", "size_bytes": None}
    return [row("baseline", 0.456, 1.02, 2.59e6, 29.6), row("prune", 0.095, 0.50, 1.13e6, 23.8),
            row("finetune", 0.458, 0.50, 1.13e6, 25.8),
            {**row("export", 0.432, 0.50, 1.13e6, 5.6), "runtime": "litert (2 threads)", "size_bytes": 1_500_000}]


def _metrics(m, p50, size, estimate):
    return {"map50_95": m, "map50": m + 0.1, "latency": {"p50_ms": p50, "p90_ms": p50 * 1.1},
            "runtime": "litert (2 threads)", "size_bytes": size,
            "device_estimate": {"estimate_ms": estimate, "label": "estimate (roofline), not a measurement",
                                "bound": "compute", "compute_ms": estimate, "utilisation_assumed": 0.25,
                                "memory_ms": 0.1}}


def _meta(target, device_results=()):
    reference = {**_metrics(0.440, 13.0, 3_000_000, 9.0), "recipe": "head",
                 "side_by_side": {"runtime": "litert (2 threads)", "ratio_p50": 0.66,
                                  "latency": {"baseline": {"p50_ms": 13.64, "p90_ms": 14.1},
                                              "compressed": {"p50_ms": 9.06, "p90_ms": 9.5}}}}
    compressed = _metrics(0.432, 5.6, 1_500_000, 5.0)
    guard = {"reference_map50_95": 0.458, "max_drop": 0.01, "chosen": "head", "float_units": [],
             "within_budget": False, "tried": [{"float_scope": "none", "map50_95": 0.404, "drop": 0.054},
                                               {"float_scope": "decode", "map50_95": 0.431, "drop": 0.027},
                                               {"float_scope": "head", "map50_95": 0.432, "drop": 0.026}]}
    rows = _stage_rows()
    return {"report": rows, "comparison": comparison_rows(reference, compressed, rows, target),
            "pruned_widths": {f"model.{i}.conv": [64, 40] for i in range(30)},
            "quantization": {"accuracy_guard": guard}, "device_results": list(device_results),
            "device_estimate": compressed["device_estimate"], "notes": ["a note"], "budget_plan": _plan()}


def _plan():
    rows = [{"imgsz": 256, "precision": "int8", "pruned": True, "flops_reduction": 0.42, "predicted_ms": 7.9, "measured_ms": None,
             "proxy_map": 0.31}, {"imgsz": 224, "precision": "int8", "pruned": True, "flops_reduction": 0.2, "predicted_ms": 7.8,
                                  "measured_ms": None, "proxy_map": 0.29},
            {"imgsz": 192, "precision": "int8", "pruned": False, "flops_reduction": 0.0, "predicted_ms": 7.7, "measured_ms": None,
             "proxy_map": 0.27}]
    return {"budget_ms": 8, "percentile": "p90", "source": "estimate (roofline), not a measurement",
            "candidates": rows, "chosen": rows[0], "reason": "pruned at 256 px: predicted p90 7.90 ms <= budget 8 ms"}


def test_report_compares_baseline_and_compressed_in_the_target_runtime(tmp_path):
    target = load_target("rpi")
    meta = _meta(target)
    assert [r["key"] for r in meta["comparison"]] == ["baseline", "compressed"]
    assert meta["comparison"][0]["latency_p50_ms"] == 13.64, "side-by-side timing, not the separate measurement"
    write_report(tmp_path, meta, target)
    md = (tmp_path / "report.md").read_text()
    table = md.split("## What compression bought")[1].split("\n\n")[1]
    assert "| unpruned baseline | 0.440 |" in table and "| **deployed (compressed)** | 0.432 |" in table
    assert "**1.51x**" in table and "host: litert (2 threads)" in table, "13.64 / 9.06 ms, side by side"
    assert "PyTorch FP32 p50 ms (secondary)" in table and "| 29.60 |" in table and "| 25.80 |" in table
    assert "pycocotools" in md, "the metric is named"
    assert "How the compression was chosen" in md and "| 256 px (chosen) | int8 | pruned | 42% | 7.90 |" in md
    for name in FIGURES.values():
        with Image.open(tmp_path / name) as image:
            assert image.width > 500 and image.height > 300, name
            colours = image.convert("RGB").getcolors(1 << 16)
            assert colours is None or len(colours) > 20, f"{name} is not a blank image"


def test_device_results_replace_the_host_column_and_keep_the_estimate(tmp_path):
    target = load_target("rpi")
    stage = {"p50": 31.0, "p90": 33.0, "p99": 35.0, "mean": 31.5, "min": 30.0, "max": 36.0, "fps": 31.7, "runs": 200}
    measured = {"device": {"machine": "aarch64"}, "runtime": "tflite", "runtime_version": "2.3.0", "dry_run": False,
                "latency_ms": {"end_to_end": stage, "infer": stage}, "timestamp": "t",
                "budget": {"ms": 40, "percentile": 90, "on": "end_to_end", "measured_ms": 33.0, "pass": True}}
    dry = {**measured, "dry_run": True, "budget": {**measured["budget"], "measured_ms": 999.0}}
    write_report(tmp_path, _meta(target, [measured, dry]), target)
    md = (tmp_path / "report.md").read_text()
    deployed = next(line for line in md.splitlines() if line.startswith("| **deployed"))
    assert "**device**: aarch64, tflite 2.3.0" in deployed and "| 31.00 | 33.00 |" in deployed
    assert "| 5.00 |" in deployed, "the estimate stays beside the measurement"
    assert "999" not in deployed and "(dry run: timings not used)" in md


def test_html_report_is_one_self_contained_file(tmp_path):
    target = load_target("rpi")
    write_report(tmp_path, _meta(target), target)
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == len(FIGURES)
    assert not re.search(r'(src|href)="(?!data:)', page), "no link to another file"
    assert "<table>" in page and "<strong>1.51x</strong>" in page and "&lt;" not in page.split("<body>")[0]
