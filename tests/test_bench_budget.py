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


def _finished_rows(tiny_model, tiny_data, tmp_path, epochs):
    """A finished run's budget.json for (a) (the profile's taylor cut) and (b) (uniform l2): the rows' fine-tuned
    files are their pruned starts, since a row is rebuilt from its widths."""
    import json

    from edgeprune.data.batches import loss_batches
    from edgeprune.data.dataset import load_dataset
    from edgeprune.manifest import sha256_file
    from edgeprune.models.checkpoint import load_model, save_model
    from edgeprune.pruning.structured import PruneConfig, prune

    checkpoint = tmp_path / "tiny.pt"
    save_model(tiny_model, checkpoint)
    base, source = load_model(checkpoint), sha256_file(checkpoint)[:16]  # what the benchmark prunes
    batches = loss_batches(load_dataset(tiny_data), 64)
    starts = {"a": prune(base, PruneConfig(flops_reduction=0.3, criterion="taylor", imgsz=64), batches)[0],
              "b": prune(base, PruneConfig(flops_reduction=0.4, criterion="l2", imgsz=64))[0]}
    rows = []
    for row, model in starts.items():
        key = bench_budget.arch_key(model, 64, epochs, source)
        save_model(model, tmp_path / "tiny-tuned" / key / "tuned.pt")
        rows.append({"key": key, "row": row, "label": bench_budget.ROWS[row], "imgsz": 64, "budget_fraction": 0.8,
                     "budget_ms": 4.0, "map50_95": 0.1, "fp32_map50_95": 0.1, "guard": "none", "flops_reduction": 0.3,
                     "proxy_map": 0.1, "measured_scaled_ms": 3.9, "measured_p50_ms": 3.8, "measured_p90_ms": 3.9,
                     "within_budget": True, "ratio_to_reference": 0.78})
    result = {"family": "tiny", "checkpoint": str(checkpoint), "data": str(tiny_data), "runtime": "onnxruntime-fp32",
              "threads": 2, "percentile": 90, "epochs": epochs, "sizes": [64], "latency_source": "measured",
              "wall_s": 60, "budgets": [{"fraction": 0.8, "budget_ms": 4.0}], "rows": rows,
              "proxy_quality": {"spearman": 1.0, "rows": 2, "best_row_picked": "1/1"}}
    (tmp_path / "budget.json").write_text(json.dumps({"command": "python -m benchmarks.budget", "results": [result]}))
    return result, starts, base


def test_a_finished_row_is_rebuilt_exactly_from_its_widths_or_refused(tiny_model, tiny_data, tmp_path):
    import pytest
    import torch

    from edgeprune.data.dataset import load_dataset
    from edgeprune.errors import EdgepruneError
    from edgeprune.manifest import sha256_file
    from edgeprune.models.checkpoint import load_model
    from edgeprune.targets import load_target

    result, starts, base = _finished_rows(tiny_model, tiny_data, tmp_path, epochs=1)
    target, data = load_target("host"), load_dataset(tiny_data)
    source = sha256_file(tmp_path / "tiny.pt")[:16]
    for row in result["rows"]:
        tuned = load_model(tmp_path / "tiny-tuned" / row["key"] / "tuned.pt")
        rebuilt = bench_budget.starting_model(base, tuned, row, target, data, 1, source)
        original = starts[row["row"]].state_dict()
        assert all(torch.equal(v, original[k]) for k, v in rebuilt.state_dict().items())
        with pytest.raises(EdgepruneError, match="could not be rebuilt from its widths"):
            bench_budget.starting_model(base, tuned, row, target, data, 2, source)  # another row's key


def test_seeds_fine_tune_every_finished_row_again_and_report_the_spread(tiny_model, tiny_data, tmp_path):
    import json

    import torch

    from edgeprune.models.checkpoint import load_model

    _finished_rows(tiny_model, tiny_data, tmp_path, epochs=1)
    assert bench_budget.main(["--seeds", "1,2", "--budget-fractions", "0.8", "--rows", "a,b", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "budget.json").read_text())
    result = saved["results"][0]
    for row in result["rows"]:
        assert set(row["seed_map50_95"]) == {"0", "1", "2"} and row["seed_map50_95"]["0"] == 0.1
        one, two = (load_model(tmp_path / "tiny-tuned" / row["key"] / f"seed{s}" / "tuned.pt") for s in (1, 2))
        assert any(not torch.equal(p, q) for p, q in zip(one.parameters(), two.parameters()))  # the seed trained
    paired = result["summary"][0]["a_minus_b_seeds"]
    a, b = result["rows"]
    assert paired["per_seed"] == {s: round(a["seed_map50_95"][s] - b["seed_map50_95"][s], 4) for s in ("0", "1", "2")}
    assert paired["range"][0] <= paired["mean"] <= paired["range"][1]
    assert "--seeds 1,2" in saved["command"] and "Fine-tuning seeds" in (tmp_path / "budget.md").read_text()


def test_rows_are_compared_per_seed_on_the_seeds_both_were_trained_with():
    a = {"seed_map50_95": {"0": 0.49, "1": 0.45, "2": 0.48, "3": 0.40}}
    b = {"seed_map50_95": {"0": 0.51, "1": 0.46, "2": 0.50}}
    paired = bench_budget.paired_differences(a, b)
    assert paired["per_seed"] == {"0": -0.02, "1": -0.01, "2": -0.02} and paired["range"] == [-0.02, -0.01]
    assert paired["mean"] == round((-0.02 - 0.01 - 0.02) / 3, 4)
    assert bench_budget.paired_differences(a, {"seed_map50_95": {"0": 0.5}}) is None  # one seed: nothing to pair
