"""A tiny end-to-end run through the public API only: `import edgeprune as ep`, verbs over objects."""

from __future__ import annotations

import pytest

import edgeprune as ep

pytestmark = pytest.mark.slow


def test_public_api_end_to_end(tiny_data, tmp_path):
    data = ep.load_dataset(tiny_data)
    model = ep.load("yolo11n.yaml", nc=data.nc)
    pruned, record = ep.prune(model, ep.PruneConfig(flops_reduction=0.5, imgsz=64))
    assert record.params_after < record.params_before and 0.4 < record.flops_reduction < 0.6
    tuned = ep.finetune(pruned, data, epochs=1, imgsz=64, work_dir=tmp_path / "ft")
    assert sum(p.numel() for p in tuned.parameters()) == record.params_after, "architecture kept"

    out = ep.export(tuned, "tflite", tmp_path / "model_int8.tflite", imgsz=64, precision="int8", data=data,
                    calibration=ep.calibrate(data, 64, images=4))
    assert out.path.is_file() and out.metrics["accuracy_guard"]["tried"], "guarded INT8, measured on the file"
    assert ep.evaluate(out.path, data, imgsz=64)["map50_95"] == out.metrics["map50_95"]

    target = ep.load_target("rpi", imgsz=64, finetune_epochs=1, calibration_images=4)
    result = ep.deploy(target, model=tuned, data=data, out=tmp_path / "dist", run_dir=tmp_path / "run")
    assert isinstance(result, ep.DeployResult) and (result.bundle / "metadata.json").is_file()
    assert [row["key"] for row in result.comparison] == ["baseline", "compressed"]


def test_public_names_are_declared_and_resolve():
    assert "deploy" in ep.__all__ and "prune" in ep.__all__
    for name in ep.__all__:
        assert getattr(ep, name) is not None
    with pytest.raises(AttributeError):
        ep.not_a_verb  # noqa: B018


def test_bad_input_through_the_api_is_one_error(tiny_data):
    with pytest.raises(ep.EdgepruneError, match="builds a classify model"):
        ep.load("yolo11n-cls.yaml")
    with pytest.raises(ep.EdgepruneError, match="INT8 export needs calibration images"):
        ep.export(ep.load("yolo11n.yaml", nc=6), "tflite", "x.tflite", imgsz=64)


def test_import_changes_nothing(tmp_path):
    """`import edgeprune` sets no environment variable, imports neither torch nor Ultralytics, writes no file."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_") and k != "OMP_NUM_THREADS"}
    env["EDGEPRUNE_CACHE"] = str(tmp_path / "cache")
    code = ("import os, sys; before = dict(os.environ); import edgeprune; "
            "assert dict(os.environ) == before, 'environment changed'; "
            "assert not {'torch', 'ultralytics'} & set(sys.modules), 'heavy imports'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert not (tmp_path / "cache").exists(), "no font copied, no config folder made"
