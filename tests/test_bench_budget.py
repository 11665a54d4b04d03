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
