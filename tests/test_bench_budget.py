"""`make bench-budget`'s report: a budget below the fastest candidate is a reported row, not a crashed run."""

from benchmarks import budget as bench_budget


def test_an_unreachable_budget_is_reported_and_the_rest_summarised():
    budgets = [{"fraction": 0.5, "budget_ms": 3.89, "unreachable": "latency budget 3.894 ms (p90) cannot be met: "
                "the fastest candidate (160 px) is predicted at 4.37 ms"},
               {"fraction": 0.8, "budget_ms": 6.2}]
    rows = [{"budget_fraction": 0.8, "row": "a", "map50_95": 0.40, "imgsz": 256, "flops_reduction": 0.3,
             "measured_scaled_ms": 6.0, "within_budget": True, "ratio_to_reference": 0.77},
            {"budget_fraction": 0.8, "row": "b", "map50_95": 0.38, "measured_scaled_ms": 6.1}]
    summary = bench_budget.summarize(budgets, rows)
    assert summary[0] == {"fraction": 0.5, "budget_ms": 3.89, "unreachable": budgets[0]["unreachable"]}
    assert summary[1]["a_minus_b"] == 0.02 and summary[1]["a_within"] and "c_map" not in summary[1]
    result = {"family": "yolo26n-synth", "runtime": "litert-int8", "summary": summary, "rows": [], "epochs": 12,
              "latency_source": "measured", "wall_s": 60, "proxy_quality": {"spearman": 1.0, "rows": 2,
                                                                            "best_row_picked": "1/1"}}
    text = bench_budget.markdown([result], "python -m benchmarks.budget")
    assert "| 3.89 ms (0.5) | unreachable: the fastest candidate (160 px) is predicted at 4.37 ms |" in text
    assert "| 6.20 ms (0.8) | 0.400 @256 pruned (6.00 ms) | 0.380 (6.10 ms) | no size fits | +0.020 |" in text


def test_retime_times_the_finished_files_again_and_rewrites_the_tables(tiny_model, tmp_path):
    import json

    from edgeprune import formats

    onnx = formats.get("onnx")
    work = tmp_path / "yolo11n-synth-onnxruntime-fp32"
    reference = onnx.export(tiny_model, work / "timing" / "reference-fp32" / "model.onnx", 64, "fp32")
    row_file = onnx.export(tiny_model, tmp_path / "row.onnx", 64, "fp32")
    rows = [{"key": k, "file": str(row_file), "imgsz": 64, "budget_fraction": 0.8, "budget_ms": 4.0, "row": k,
             "label": bench_budget.ROWS[k], "map50_95": m, "fp32_map50_95": m, "guard": "none", "flops_reduction": 0.0,
             "proxy_map": m} for k, m in (("a", 0.4), ("b", 0.38))]
    result = {"family": "yolo11n-synth", "runtime": "onnxruntime-fp32", "precision": "fp32", "threads": 2,
              "percentile": 90, "sizes": [64], "unpruned_ms": {"64": 5.0}, "epochs": 12, "latency_source": "measured",
              "wall_s": 60, "budgets": [{"fraction": 0.8, "budget_ms": 4.0}], "rows": rows,
              "proxy_quality": {"spearman": 1.0, "rows": 2, "best_row_picked": "1/1"}}
    (tmp_path / "budget.json").write_text(json.dumps({"command": "python -m benchmarks.budget", "results": [result]}))
    assert bench_budget.main(["--retime", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "budget.json").read_text())
    timed = saved["results"][0]
    assert timed["final_timing_repeats"] == bench_budget.FINAL_REPEATS and timed["reference_file"] == str(reference)
    for row in timed["rows"]:
        low, high = row["ratio_range"]
        assert low <= row["ratio_to_reference"] <= high
        assert row["measured_scaled_ms"] == round(row["ratio_to_reference"] * 5.0, 3)
    assert "--retime" in saved["command"] and (tmp_path / "budget.png").exists()
    assert "in 3 passes (the median ratio counts)" in (tmp_path / "budget.md").read_text()
