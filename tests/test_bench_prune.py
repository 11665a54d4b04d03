"""`make bench-prune` at toy size: rows, ratios and the report; interleaved timing takes turns."""

import json

from edgeprune import bench_prune
from edgeprune.evaluate.latency import measure_interleaved


def test_interleaved_timing_takes_turns():
    calls = []
    runs = {name: (lambda x, name=name: calls.append(name)) for name in ("a", "b", "c")}
    result = measure_interleaved(runs, imgsz=8, warmup=1, per_turn=2, rounds=3)
    assert calls == (["a"] * 3 + ["b"] * 3 + ["c"] * 3) * 3  # a warm-up and two timed runs per turn
    assert all(r["runs"] == 6 for r in result.values())


def test_bench_prune_rows_and_report(tmp_path):
    result = bench_prune.run(models=("yolo11n.yaml",), reductions=(0.5,), imgsz=64, nc=6, rounds=2)
    base, pruned = result["rows"]
    assert base["flops_goal"] == 0 and base["latency_ratio"] == 1.0
    assert pruned["params"] < base["params"] and 0.4 <= pruned["flops_ratio"] <= 0.6
    assert pruned["latency_ratio"] == round(pruned["p50_ms"] / base["p50_ms"], 3)
    result["accuracy"] = [{"checkpoint": "runs/x/yolo11n-synth.pt", "flops_goal": 0.5, "flops_removed": 0.51,
                           "epochs": 12, "imgsz": 256, "map50_95_before_finetune": 0.1,
                           "map50_95_after_finetune": 0.45, "delta_vs_unpruned_same_epochs": -0.027}]
    (tmp_path / "earlier.json").write_text(json.dumps(result))
    text = bench_prune.markdown(result)
    assert "| yolo11n.yaml | 50% |" in text and "| yolo11n-synth.pt | 50% | 51% | 12 | 0.100 | 0.450 | -2.7 pts |" in text
    assert bench_prune.main(["--skip-latency", "--accuracy-from", str(tmp_path / "earlier.json"),
                             "--out", str(tmp_path / "out")]) == 0
    merged = json.loads((tmp_path / "out" / "prune.json").read_text())
    assert merged["accuracy"] == result["accuracy"]
