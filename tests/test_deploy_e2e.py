"""The real pipeline on a tiny configuration: prune -> fine-tune -> INT8 TFLite -> evaluate -> bundle."""

import json
import subprocess
import sys

import pytest

from edgeprune.formats.tflite.inspect import tensor_dtype_census
from edgeprune.manifest import sha256_file
from edgeprune.pipeline import DeployRequest, deploy

pytestmark = pytest.mark.slow


def _request(tiny_data, tmp_path):
    return DeployRequest(target="rpi", model="yolo11n.yaml", data=str(tiny_data), out=tmp_path / "dist",
                         run_dir=tmp_path / "run", epochs=1, imgsz=64, calibration_images=4, baseline_epochs=1,
                         latency_budget_ms=BUDGET_MS)


BUDGET_MS = 0.6  # the rpi roofline at 64 px: unpruned yolo11n ~1.1 ms, every group at its floor ~0.4 ms


def test_deploy_interrupt_resume_and_skip(tiny_data, tmp_path, monkeypatch, capsys):
    import edgeprune.formats.tflite.export as tflite

    real_quantize = tflite.quantize_int8

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of the INT8 stage

    monkeypatch.setattr(tflite, "quantize_int8", interrupted)
    with pytest.raises(KeyboardInterrupt):
        deploy(_request(tiny_data, tmp_path))
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"baseline", "plan", "prune", "finetune"}
    assert not (run / "export-rpi" / "model_int8.tflite").exists(), "no half-written artefact under the final name"
    assert not (tmp_path / "dist").exists()

    monkeypatch.setattr(tflite, "quantize_int8", real_quantize)
    capsys.readouterr()
    result = deploy(_request(tiny_data, tmp_path))
    log = capsys.readouterr().out
    for stage in ("baseline", "plan", "prune", "finetune"):
        assert f"[{stage}] up to date, skipped" in log
    assert "[export-rpi] running" in log

    bundle = result.bundle
    tflite_file = bundle / "model_int8.tflite"
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["names"] == {str(i): n for i, n in enumerate(("circle", "square", "triangle", "star", "cross", "ring"))}
    assert meta["input"]["shape"] == [1, 3, 64, 64]
    for name, digest in meta["files"].items():
        assert sha256_file(bundle / name) == digest
    census = tensor_dtype_census(tflite_file)
    assert census.get("int8", 0) > 100 and census.get("float32", 0) <= 4, f"full INT8 inside: {census}"
    assert (bundle / "report.md").read_text().count("|") > 20 and (bundle / "report.png").stat().st_size > 1000
    baseline_row, deployed_row = meta["comparison"]
    assert (baseline_row["key"], deployed_row["key"]) == ("baseline", "compressed") and baseline_row["side_by_side"]
    assert baseline_row["runtime"] == deployed_row["runtime"] == "litert (2 threads)", "both in the target runtime"
    assert baseline_row["size_bytes"] > deployed_row["size_bytes"], "the unpruned INT8 file is bigger"
    assert {"report.html", "widths.png", "guard.png"} <= set(meta["files"])
    assert "speed-up vs baseline" in (bundle / "report.md").read_text()

    rows = {r["stage"]: r for r in result.rows}
    plan = meta["budget_plan"]
    assert plan["budget_ms"] == BUDGET_MS and plan["chosen"]["pruned"] and plan["chosen"]["predicted_ms"] <= BUDGET_MS
    assert meta["latency_prediction"]["p90_ms"] <= BUDGET_MS, "the deployed model is predicted within the budget"
    assert (bundle / "budget.png").stat().st_size > 1000 and "latency budget" in (bundle / "report.md").read_text()
    assert rows["export"]["gflops"] <= 0.8 * rows["baseline"]["gflops"]
    assert rows["finetune"]["params"] < rows["baseline"]["params"]
    metrics = json.loads((run / "manifest.json").read_text())["stages"]
    assert metrics["finetune"]["metrics"]["params"] == metrics["prune"]["metrics"]["params"], "architecture kept"

    capsys.readouterr()
    deploy(_request(tiny_data, tmp_path))
    assert capsys.readouterr().out.count("up to date, skipped") == 6

    _device_results_round_trip(bundle, tmp_path)

    _emulated_outputs_are_bit_exact(bundle, tiny_data, tmp_path)


def _device_results_round_trip(bundle, tmp_path):
    """The bundle's own script writes results that `edgeprune validate` accepts; the re-rendered bundle still
    passes the script's whole-bundle integrity check."""
    from edgeprune.bundle import add_device_results

    script = [sys.executable, str(bundle / "validate_tflite.py"), "--dry-run", "--threads", "1"]
    first = subprocess.run([*script, "--out", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    add_device_results(bundle, tmp_path / "r.json")
    meta = json.loads((bundle / "metadata.json").read_text())
    assert "device_results_1.json" in meta["files"] and "Measured" in (bundle / "report.md").read_text()
    again = subprocess.run([*script, "--out", str(tmp_path / "r2.json")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr


def _emulated_outputs_are_bit_exact(bundle, tiny_data, tmp_path):
    """The bundle's own validate_tflite.py on qemu's Cortex-A76 (the Pi 5's CPU) computes the host's INT8 bits."""
    from test_emulate import needs_qemu

    if needs_qemu.args[0]:
        pytest.skip(needs_qemu.kwargs["reason"])
    from edgeprune.data.dataset import load_dataset
    from edgeprune.emulate import emulate
    from edgeprune.targets import load_target

    report = emulate(bundle, load_target("rpi"), list(load_dataset(tiny_data).val_images[:4]), tmp_path / "emulate")
    assert report["pass"] and report["policy"] == "bit-exact", report["checks"]
    assert report["integer_graph"], "the tiny model's guard keeps everything INT8: raw outputs compared bit for bit"
    assert report["emulated_device"]["machine"] == "aarch64" and report["qemu_cpu"] == "cortex-a76"
