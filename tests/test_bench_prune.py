"""`make bench-prune` at toy size: rows, ratios and the report; interleaved timing takes turns."""

import json

import pytest

from benchmarks import pruning as bench_prune
from edgeprune.evaluation.latency import measure_interleaved
from edgeprune.models.checkpoint import save_model


def test_interleaved_timing_takes_turns():
    calls = []
    runs = {name: (lambda x, name=name: calls.append(name)) for name in ("a", "b", "c")}
    result = measure_interleaved(runs, imgsz=8, warmup=1, per_turn=2, rounds=3, settle_ms=0)
    assert calls == (["a"] * 3 + ["b"] * 3 + ["c"] * 3) * 3  # a warm-up and two timed runs per turn
    assert all(r["runs"] == 6 for r in result.values())


def test_interleaved_timing_settles_each_turn():
    """Warm-up lasts at least settle_ms, so another session's spinning threads have gone quiet."""
    import time

    calls = []

    def slow(x, name):
        calls.append(name)
        time.sleep(0.002)

    runs = {name: (lambda x, name=name: slow(x, name)) for name in ("a", "b")}
    result = measure_interleaved(runs, imgsz=8, warmup=1, per_turn=2, rounds=2, settle_ms=20)
    turn = calls[: calls.index("b")]
    assert len(turn) >= 2 + 20 // 3, "warm-up ran for the settle time, then the timed runs"
    assert all(r["runs"] == 4 for r in result.values())


def test_bench_prune_rows_and_report(tmp_path):
    result = bench_prune.run(models=("yolo11n.yaml",), reductions=(0.5,), imgsz=64, nc=6, rounds=2, repeats=2)
    base, pruned = result["rows"]
    assert base["flops_goal"] == 0 and base["latency_ratio"] == 1.0 and base["latency_ratio_range"] == [1.0, 1.0]
    assert pruned["params"] < base["params"] and 0.4 <= pruned["flops_ratio"] <= 0.6
    ratios = [p / b for p, b in zip(pruned["p50_ms_per_repeat"], base["p50_ms_per_repeat"])]
    assert len(ratios) == 2 and pruned["latency_ratio_range"] == [round(min(ratios), 3), round(max(ratios), 3)]
    assert pruned["latency_ratio"] == round(sum(ratios) / 2, 3)  # the median of two repeats
    result["accuracy"] = [{"checkpoint": "runs/x/yolo11n-synth.pt", "flops_goal": 0.5, "flops_removed": 0.51,
                           "epochs": 12, "imgsz": 256, "map50_95_before_finetune": 0.1,
                           "map50_95_after_finetune": 0.45, "delta_vs_unpruned_same_epochs": -0.027},
                          {"checkpoint": "runs/x/yolo11n-synth.pt", "flops_goal": 0.5, "flops_removed": 0.51,
                           "epochs": 12, "imgsz": 256, "distill_weight": 1.0, "map50_95_before_finetune": 0.1,
                           "map50_95_after_finetune": 0.47, "delta_vs_unpruned_same_epochs": -0.007}]
    (tmp_path / "earlier.json").write_text(json.dumps(result))
    text = bench_prune.markdown(result)
    assert "| yolo11n.yaml | 50% | uniform |" in text and "2 repeat(s)" in text
    assert "| yolo11n-synth.pt | 50% | 51% | 12 | — | 0.100 | 0.450 | -2.7 pts |" in text
    assert "| yolo11n-synth.pt | 50% | 51% | 12 | distil 1 | 0.100 | 0.470 | -0.7 pts |" in text
    assert bench_prune.main(["--skip-latency", "--accuracy-from", str(tmp_path / "earlier.json"),
                             "--out", str(tmp_path / "out")]) == 0
    merged = json.loads((tmp_path / "out" / "prune.json").read_text())
    assert merged["accuracy"] == result["accuracy"]


def test_bench_prune_heads_rows_drop_half_of_every_attention_blocks_heads():
    result = bench_prune.run(models=("yolo26n.yaml",), reductions=(0.5,), imgsz=64, nc=6, rounds=1, heads=True)
    base, channels_only, halved = result["rows"]
    assert base["flops_goal"] == 0 and base["heads_dropped"] == 0 and base["latency_ratio"] == 1.0
    assert channels_only["heads_dropped"] == 0, "timed beside the channel-only pruning at the same goal"
    assert halved["heads_dropped"] == 2 and 0.4 <= halved["flops_ratio"] <= 0.6, "one head of each of two blocks"
    text = bench_prune.markdown(result)
    assert "| yolo26n.yaml | 50% | uniform | 0 |" in text and "| yolo26n.yaml | 50% | uniform | 2 |" in text


@pytest.mark.slow
def test_accuracy_rows_with_and_without_distillation(tiny_data, tiny_model, tmp_path):
    checkpoint = save_model(tiny_model, tmp_path / "tiny.pt")
    rows = bench_prune.accuracy(checkpoint, str(tiny_data), (0.5,), epochs=2, imgsz=64, work=tmp_path / "work",
                                distill_weight=1.0, steps=(2,))
    assert [(r["flops_goal"], r["distill_weight"], r["prune_steps"]) for r in rows] == [
        (0.0, 0.0, 0), (0.5, 0.0, 2), (0.5, 1.0, 2)]
    assert bench_prune._recipe(rows[2]) == "2 cuts + distil 1" and bench_prune._recipe(rows[0]) == "—"
    assert rows[0]["delta_vs_unpruned_same_epochs"] == 0 and all(0.4 <= r["flops_removed"] <= 0.6 for r in rows[1:])
    for row in rows:
        assert row["delta_vs_unpruned_same_epochs"] == round(
            row["map50_95_after_finetune"] - rows[0]["map50_95_after_finetune"], 4)
    logged = {name: (tmp_path / "work" / name / "ultralytics" / "results.csv").read_text().splitlines()[0]
              for name in ("goal0", "goal50-steps2", "goal50-steps2-kd1", "goal50-steps2-kd1/step1")}
    assert "kd_loss" in logged["goal50-steps2-kd1"] and "kd_loss" not in logged["goal50-steps2"], "only -kd: a teacher"
    assert "kd_loss" in logged["goal50-steps2-kd1/step1"], "the teacher also teaches between the cuts"
    epochs = {name: len((tmp_path / "work" / name / "ultralytics" / "results.csv").read_text().splitlines()) - 1
              for name in ("goal0", "goal50-steps2", "goal50-steps2/step1")}
    assert epochs == {"goal0": 2, "goal50-steps2": 1, "goal50-steps2/step1": 1}, "same total epochs as the control"


def test_bench_prune_times_each_allocation_of_a_goal_in_the_same_turns():
    result = bench_prune.run(models=("yolo11n.yaml",), reductions=(0.5,), imgsz=64, nc=6, rounds=1,
                             allocations=("uniform", "knapsack"))
    base, uniform, knapsack = result["rows"]
    assert (uniform["allocation"], knapsack["allocation"]) == ("uniform", "knapsack")
    assert all(0.45 <= r["flops_ratio"] <= 0.55 for r in (uniform, knapsack)) and uniform["params"] != knapsack["params"]
    assert base["latency_ratio"] == 1.0 and knapsack["latency_ratio"] > 0
    table = bench_prune.markdown(result)
    assert "| yolo11n.yaml | 50% | knapsack | 0 |" in table and "| yolo11n.yaml | 0% | — | 0 |" in table


def test_bench_prune_times_trained_checkpoints_as_ratios_to_the_first(tiny_model, tmp_path):
    from edgeprune.models.checkpoint import save_model
    from edgeprune.pruning.structured import PruneConfig, prune

    pruned, _ = prune(tiny_model, PruneConfig(flops_reduction=0.5, imgsz=64))
    save_model(tiny_model, tmp_path / "base.pt")
    save_model(pruned, tmp_path / "cut.pt")
    result = bench_prune.timed_checkpoints([str(tmp_path / "base.pt"), f"knapsack={tmp_path / 'cut.pt'}"],
                                           imgsz=64, rounds=1)
    base, cut = result["rows"]
    assert (base["model"], cut["model"]) == ("base", "knapsack") and base["latency_ratio"] == 1.0
    assert 0.4 <= cut["flops_ratio"] <= 0.6 and cut["flops_goal"] == round(1 - cut["flops_ratio"], 3)
    assert cut["params"] < base["params"] and cut["p50_ms"] > 0
    assert f"| knapsack | {cut['flops_goal']:.0%} | as trained |" in bench_prune.markdown(result)
    assert base["macs_kept"] == {"backbone": 1.0, "neck": 1.0, "head": 1.0}
    assert all(0 < kept < 1 for kept in cut["macs_kept"].values()), "a uniform cut takes from every part"
    assert "| 100% / 100% / 100% |" in bench_prune.markdown(result)


def test_macs_by_part_splits_the_deployed_convs_at_the_yamls_backbone():
    from edgeprune.evaluation.model_stats import count_macs
    from edgeprune.latency.features import macs_by_part
    from edgeprune.models.checkpoint import build_from_yaml

    parts = {yaml: macs_by_part(build_from_yaml(yaml, 6), 64) for yaml in ("yolo11n.yaml", "yolo26n.yaml")}
    for yaml, by_part in parts.items():
        total = count_macs(build_from_yaml(yaml, 6), 64)[0] / 1e9
        assert sum(by_part.values()) == pytest.approx(total, rel=0.03), "convolutions are nearly all the MACs"
    assert parts["yolo11n.yaml"]["backbone"] == pytest.approx(parts["yolo26n.yaml"]["backbone"]), "same backbone"
    assert parts["yolo11n.yaml"]["head"] > 2.5 * parts["yolo26n.yaml"]["head"], "YOLO11's DFL box head is wide"
