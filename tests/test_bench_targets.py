"""`make bench-targets` at toy size: each target's artefact is exported by its profile and run for its mAP."""

import json

import pytest

from benchmarks import targets as bench_targets
from edgeprune.models.checkpoint import save_model


@pytest.mark.slow
def test_every_target_row_is_the_artefact_run(tiny_data, tiny_model, tmp_path):
    checkpoint = save_model(tiny_model, tmp_path / "tiny.pt")
    out = tmp_path / "bench"
    assert bench_targets.main(["--checkpoint", str(checkpoint), "--data", str(tiny_data), "--imgsz", "64",
                               "--targets", "host,rpi", "--out", str(out)]) == 0
    result = json.loads((out / "targets.json").read_text())
    rows = {r["target"]: r for r in result["rows"]}
    assert rows["host"]["artefact"].endswith(".onnx") and rows["host"]["precision"] == "fp32"
    assert all(0 <= r["map50_95"] <= 1 and r["runtime"] and "proxy" not in r["runtime"] for r in rows.values())
    assert rows["rpi"]["artefact"].endswith(".tflite") and rows["rpi"]["precision"] == "int8"
    assert (out / "rpi" / rows["rpi"]["artefact"]).is_file() and (out / "host" / rows["host"]["artefact"]).is_file()
    assert "| rpi |" in (out / "targets.md").read_text()
