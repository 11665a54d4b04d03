"""`make bench-ops` at toy size: per-operator profiles of unpruned and pruned models, and the attention's share."""

import json

from benchmarks import ops as bench_ops


def test_attention_time_splits_into_convs_and_the_rest():
    nodes = {"/model/model.10/m/m.0/attn/qkv/conv/Conv_output_0_nchwc": 2.0, "/model/model.10/m/m.0/attn/MatMul": 1.0,
             "/model/model.10/m/m.0/attn/Softmax": 0.5, "/model/model.0/conv/Conv": 10.0}
    assert bench_ops.attention_ms(nodes) == (3.5, 1.5)


def test_bench_ops_profiles_every_variant(tmp_path):
    assert bench_ops.main(["--models", "yolo26n.yaml", "--imgsz", "64", "--runs", "2", "--heads",
                           "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "ops.json").read_text())
    base, pruned = result["rows"]
    assert (base["flops_goal"], base["heads"], pruned["flops_goal"], pruned["heads"]) == (0.0, False, 0.5, True)
    assert base["total_ratio"] == 1.0 and 0 < pruned["op_ratio"]["Conv"] < 1, "half the FLOPs: less conv time"
    assert 0 < base["attention_not_conv_share"] < base["attention_share"] < 0.5
    assert "| yolo26n.yaml | 64 | 50% | yes |" in (tmp_path / "ops.md").read_text()
