"""`make bench-guard-latency` on a tiny model: every guard level exported and timed side by side."""

import json

from benchmarks import guard_latency
from edgeprune.models.checkpoint import save_model


def test_every_guard_level_is_timed_beside_the_all_int8_file(tiny_model, tiny_data, tmp_path):
    checkpoint = save_model(tiny_model, tmp_path / "tiny.pt")
    assert guard_latency.main(["--format", "onnx", "--models", str(checkpoint), "--imgsz", "64", "--goals", "0", "0.5",
                               "--data", str(tiny_data), "--rounds", "2", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "guard-latency.json").read_text())
    assert result["timing_scope"] == "head/percentile"
    assert [r["flops_goal"] for r in result["rows"]] == [0.0, 0.5]
    for row in result["rows"]:
        assert list(row["levels"]) == ["none", "head", "head/percentile"]
        timed = {level: t for level, t in row["levels"].items() if "p90_ms" in t}
        assert row["levels"]["none"]["p90_ratio"] == 1.0 and {"none", "head"} <= set(timed)
        assert all(t["p90_ms"] > 0 for t in timed.values())
        assert all(t["failed"] for level, t in row["levels"].items() if level not in timed), "a failure says why"
    assert "| tiny | 64 | 50% |" in (tmp_path / "out" / "guard-latency.md").read_text()
