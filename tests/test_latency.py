"""The latency model: a probe of real pruned variants, timed by the device script, fitted, and refused when wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.latency import model as latency
from edgeprune.latency.probe import ProbePlan, build_probe, random_variant, read_probe
from edgeprune.targets import load_target

SIZES = (64, 128)


def _time(probe: Path, out: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(probe / "probe_latency.py"), "--probe", str(probe), "--out", str(out),
                           "--warmup", "1", "--runs", "3", "--rounds", "2", *extra], capture_output=True, text=True,
                          env=env)


@pytest.fixture(scope="module")
def host_probe(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    probe = build_probe(tiny_model, load_target("host"), root / "host-probe", ProbePlan(SIZES, variants=5, seed=1))
    table = root / "host-latency.json"
    done = _time(probe, table)
    assert done.returncode == 0, done.stderr
    return probe, table


def test_probe_bundle_holds_pruned_variants_on_the_grid_with_their_checks(host_probe, tiny_model):
    probe, _ = host_probe
    manifest = read_probe(probe)
    assert manifest["runtime"] == "onnxruntime" and manifest["precision"] == "fp32" and manifest["threads"] == 2
    assert len(manifest["models"]) == len(SIZES) * 6 and {m["imgsz"] for m in manifest["models"]} == set(SIZES)
    assert sum(not m["pruned"] for m in manifest["models"]) == len(SIZES), "the unpruned model at every size"
    macs = [m["features"]["gmacs_s8"] for m in manifest["models"] if m["imgsz"] == 64]
    assert len(set(macs)) == len(macs), "each variant has its own widths"
    for name in ("probe_latency.py", "edgeprune_detector.py", "device_cli.py"):
        assert (probe / name).is_file()
    variant, ratios = random_variant(tiny_model, 64, 8, np.random.default_rng(0), 0.75)
    widths = [m.out_channels for n, m in variant.named_modules() if type(m).__name__ == "Conv2d"
              and not n.startswith(f"model.{len(variant.model) - 1}.")]
    assert all(w % 8 == 0 for w in widths) and any(r > 0.3 for r in ratios.values())


def test_table_fit_and_prediction_of_a_variant_it_never_saw(host_probe, tiny_model):
    _, table_path = host_probe
    table = latency.load_table(table_path)
    assert table["runtime_version"] and table["threads"] == 2 and table["timing"]["order"] == "interleaved"
    assert all(r["p50"] <= r["p90"] <= r["p99"] for r in table["results"])
    assert all(r["ops_ms"]["Conv"] > 0 for r in table["results"]), "ONNX Runtime's own per-operator profile"
    fitted = latency.fit(table, holdout=0.3)
    assert fitted.heldout["count"] == 3 and 0 <= fitted.heldout["within_10pct"] <= 1
    assert all(c >= 0 for coefs in fitted.coefficients.values() for c in coefs), "every cost is non-negative"
    target = load_target("host")
    unseen, _ = random_variant(tiny_model, 96, 8, np.random.default_rng(42), 0.75)
    predicted = latency.predict(unseen, 96, target, fitted)
    assert predicted["p50_ms"] > 0 and predicted["p90_ms"] >= predicted["p50_ms"] * 0.9
    assert not predicted["extrapolated"] and "measured" in predicted["source"]
    assert latency.predict(unseen, 160, target, fitted)["extrapolated"]
    full = latency.predict(tiny_model, 128, target, fitted)["p50_ms"]
    assert full > latency.predict(unseen, 64, target, fitted)["p50_ms"], "a bigger model at a bigger size costs more"
    estimate = latency.predict(unseen, 96, target)
    assert "estimate (roofline)" in estimate["source"]
    saved = fitted.save(table_path.with_name("model.json"))
    assert latency.load_model(saved).coefficients == fitted.coefficients


def test_cli_fit_and_predict(host_probe, tmp_path, capsys):
    from edgeprune.cli import main

    _, table = host_probe
    assert main(["latency", "fit", str(table), "--out", str(tmp_path / "m.json")]) == 0
    assert "held-out" in capsys.readouterr().out
    assert main(["latency", "predict", "--model", "yolo11n.yaml", "--target", "host", "--imgsz", "64",
                 "--latency-model", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "host at 64 px: p50" in out and "measured" in out
    assert main(["latency", "predict", "--model", "yolo11n.yaml", "--target", "host", "--imgsz", "64",
                 "--latency-model", str(tmp_path / "m.json"), "--threads", "4"]) == 2
    assert "threads 2 (target wants 4)" in capsys.readouterr().err


def test_truncated_tampered_and_nonsense_tables_are_refused(host_probe, tmp_path):
    probe, table_path = host_probe
    text = table_path.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(text[: len(text) // 2])
    with pytest.raises(EdgepruneError, match="not valid JSON"):
        latency.load_table(bad)
    table = json.loads(text)
    table["probe"]["models"][1]["features"]["gmacs_s8"] *= 2
    bad.write_text(json.dumps(table))
    with pytest.raises(EdgepruneError, match="does not match its recorded sha256"):
        latency.load_table(bad)
    table = json.loads(text)
    table["results"][0]["p50"] = -1
    bad.write_text(json.dumps(table))
    with pytest.raises(EdgepruneError, match="impossible timings"):
        latency.load_table(bad)
    table = json.loads(text)
    table["results"].pop()
    bad.write_text(json.dumps(table))
    with pytest.raises(EdgepruneError, match="have no timing"):
        latency.load_table(bad)
    bad.write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(EdgepruneError, match="not an edgeprune latency table"):
        latency.load_table(bad)


def test_a_model_from_another_runtime_precision_or_version_is_refused(host_probe):
    _, table_path = host_probe
    fitted = latency.fit(latency.load_table(table_path))
    with pytest.raises(EdgepruneError, match="runtime 'onnxruntime' \\(target wants 'tflite'\\)"):
        latency.check_matches(fitted, load_target("rpi", threads=2))
    with pytest.raises(EdgepruneError, match="runtime_version"):
        latency.check_matches(fitted, load_target("host"), runtime_version="0.0.1")
    latency.check_matches(fitted, load_target("host"), runtime_version=fitted.key["runtime_version"])


def test_a_changed_probe_model_stops_the_device_script(host_probe, tmp_path):
    import shutil

    probe, _ = host_probe
    copy = tmp_path / "probe"
    shutil.copytree(probe, copy)
    victim = copy / read_probe(copy)["models"][2]["file"]
    victim.write_bytes(victim.read_bytes()[:-10])
    done = _time(copy, tmp_path / "t.json")
    assert done.returncode == 3 and "does not match its sha256" in done.stderr and not (tmp_path / "t.json").exists()


def test_tensorrt_probe_is_timed_by_trtexec_and_fitted(tiny_model, tmp_path):
    """No TensorRT here: a stand-in `trtexec` on PATH writes --exportTimes records in trtexec's documented
    layout (one object per inference: startInMs ... latencyMs, endToEndMs), proportional to the model's size."""
    import os

    probe = build_probe(tiny_model, load_target("jetson", precision="fp16"), tmp_path / "jetson-probe",
                        ProbePlan((64,), variants=11))  # FP16 exports fast; INT8 probes differ only in the file
    assert all(m["file"].endswith("model_fp16.onnx") for m in read_probe(probe)["models"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "trtexec"
    fake.write_text(f"""#!{sys.executable}
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
ms = os.path.getsize(args["onnx"]) / 1e6
records = [dict(startInMs=i, endInMs=i + 0.01, startComputeMs=i + 0.01, endComputeMs=i + 0.01 + ms,
                startOutMs=i + 0.01 + ms, endOutMs=i + 0.02 + ms, inMs=0.01, computeMs=ms, outMs=0.01,
                latencyMs=ms + 0.02 + 0.001 * (i % 3), endToEndMs=ms + 0.02) for i in range(int(args["iterations"]))]
json.dump(records, open(args["exportTimes"], "w"))
json.dump([{{"count": 1}}, {{"name": "conv", "timeMs": ms, "averageMs": ms, "medianMs": ms, "percentage": 100}}],
          open(args["exportProfile"], "w"))
""")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = _time(probe, tmp_path / "jetson.json", "--threads", "1", env=env)
    assert done.returncode == 0, done.stderr
    table = latency.load_table(tmp_path / "jetson.json")
    assert table["runtime_label"] == "tensorrt (trtexec)" and table["results"][0]["runs"] == 6
    fitted = latency.fit(table, holdout=0)
    assert fitted.key["runtime"] == "tensorrt" and fitted.key["precision"] == "fp16"


def test_rpi_probe_is_full_int8_tflite_timed_by_litert(tiny_model, tmp_path):
    """The rpi probe: calibrated INT8 .tflite variants, timed by the device script through LiteRT (dry run)."""
    calibration = {64: np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)}
    probe = build_probe(tiny_model, load_target("rpi", threads=2), tmp_path / "rpi-probe", ProbePlan((64,), 1),
                        calibration)
    from edgeprune.formats.tflite.inspect import tensor_dtype_census

    files = [probe / m["file"] for m in read_probe(probe)["models"]]
    assert all(f.suffix == ".tflite" and tensor_dtype_census(f).get("int8", 0) > 50 for f in files)
    done = _time(probe, tmp_path / "rpi.json", "--dry-run")
    assert done.returncode == 0, done.stderr
    table = latency.load_table(tmp_path / "rpi.json")
    assert (table["runtime"], table["precision"], table["threads"], table["dry_run"]) == ("tflite", "int8", 2, True)
    with pytest.raises(EdgepruneError, match="fewer than the 12 costs"):
        latency.fit(table)
    with pytest.raises(EdgepruneError, match="an INT8 probe needs calibration"):
        build_probe(tiny_model, load_target("rpi"), tmp_path / "x", ProbePlan((64,), 1))
    assert not (tmp_path / "x").exists()


def test_an_end_to_end_head_counts_only_the_branch_it_deploys():
    """YOLO26 computes its one-to-many branch in eval mode too, but the export drops it (Detect.fuse): features
    and the knapsack's conv census must describe the deployed graph, not the training one."""
    from copy import deepcopy

    from edgeprune.budget.costs import conv_census
    from edgeprune.latency.features import latency_features
    from edgeprune.models.checkpoint import build_from_yaml

    model = build_from_yaml("yolo26n.yaml", 6)
    deployed = deepcopy(model)
    deployed.model[-1].fuse()  # what the exporter converts: the one-to-one branch under the cv2/cv3 names
    assert latency_features(model, 96) == latency_features(deployed, 96)
    census = conv_census(model, 96)
    assert not any(".23.cv2." in n or ".23.cv3." in n for n in census.convs)
    assert any(".23.one2one_cv3." in n for n in census.convs)


def test_the_fit_ties_costs_across_strides_unless_the_timings_ask_for_more():
    """Cross-validated structure choice: pooled costs when every stride costs the same per GMAC, per-stride costs
    when one resolution is clearly dearer (e.g. a layout reorder at stride 2)."""
    from edgeprune.latency.features import feature_names

    names = feature_names()
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(40)] + [rng.uniform(0.01, 0.3, 40) for _ in names[1:]])
    pooled = np.array([0.5] + [10.0] * 5 + [2.0] * 5 + [1.0])
    y = x @ pooled * rng.normal(1, 0.02, 40)
    assert latency.choose_structure(x, y, names)[0] == "pooled"
    stride2_dear = pooled.copy()
    stride2_dear[names.index("gmacs_s2")] = 80.0
    assert latency.choose_structure(x, x @ stride2_dear * rng.normal(1, 0.02, 40), names)[0] == "per-stride"
