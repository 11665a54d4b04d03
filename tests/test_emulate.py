"""Emulated ARM validation: the comparison rules, and real qemu runs of bundle scripts.

The qemu runs need qemu-user-static and mmdebstrap (`.ci/run` installs them); without them those
tests skip with the install command. The full INT8 TFLite bundle is emulated in test_deploy_e2e.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgeprune.emulate import HOST_TOOLS, compare, emulate, emulated_command, matched_fraction
from edgeprune.errors import EdgepruneError
from edgeprune.targets import load_target

needs_qemu = pytest.mark.skipif(any(shutil.which(t) is None for t in HOST_TOOLS),
                                reason="needs qemu-user-static and mmdebstrap: apt-get install qemu-user-static "
                                       "mmdebstrap (.ci/run installs them)")


def _dump(raw_shift: float = 0.0, boxes=((10, 10, 50, 50, 0.9, 1), (60, 60, 90, 90, 0.8, 2))) -> dict:
    raw = np.linspace(0, 1, 40, dtype=np.float32).reshape(1, 10, 4) + np.float32(raw_shift)
    dets = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    return {"0/input": np.zeros((1, 3, 8, 8), np.float32), "0/raw": raw, "0/detections": dets,
            "0/detections_from_reference": dets.copy()}


def test_bit_exact_policy_catches_one_ulp():
    host = _dump()
    assert all(c.passed for c in compare(host, _dump(), "bit-exact"))
    off = _dump()
    off["0/raw"] = np.nextafter(off["0/raw"], np.float32(2))  # one ulp: the kind of drift QEMU_CPU=max causes
    failed = {c.name for c in compare(host, off, "bit-exact") if not c.passed}
    assert failed == {"raw bit-exact"}


def test_float_tail_tolerates_ulps_but_not_real_differences():
    """A guard that kept decoding in float: sigmoid/softmax kernels round differently on ARM and x86."""
    host = _dump()
    ulps = _dump()
    ulps["0/raw"] = np.nextafter(ulps["0/raw"], np.float32(2))
    ulps["0/detections"][:, :4] += 2e-5
    assert all(c.passed for c in compare(host, ulps, "bit-exact", integer_graph=False))
    assert not all(c.passed for c in compare(host, ulps, "bit-exact", integer_graph=True))
    off = _dump(raw_shift=1e-3)
    failed = {c.name for c in compare(host, off, "bit-exact", integer_graph=False) if not c.passed}
    assert failed == {"raw within 1e-05 (float decode tail)"}


def test_mixed_graph_is_checked_as_agreement_not_claimed_bit_exact():
    """Blocks floated between INT8 ones re-quantize float results: an INT8 step of drift is legitimate there,
    lost detections are not."""
    host = _dump()
    stepped = _dump(raw_shift=0.03)
    stepped["0/detections"][:, :4] += 0.5
    assert not all(c.passed for c in compare(host, stepped, "bit-exact", integer_graph=False))
    assert all(c.passed for c in compare(host, stepped, "bit-exact", integer_graph=False, mixed=True))
    lost = _dump(boxes=((10, 10, 50, 50, 0.9, 1),))
    lost["0/detections_from_reference"] = host["0/detections"].copy()
    assert not all(c.passed for c in compare(host, lost, "bit-exact", integer_graph=False, mixed=True))


def test_integer_graph_only_for_int8_without_float_levels():
    from edgeprune.emulate import integer_graph

    guard = lambda level: {"precision": "int8", "quantization": {"accuracy_guard": {"chosen": level}}}  # noqa: E731
    assert integer_graph(guard("none")) and not integer_graph(guard("decode"))
    assert not integer_graph({"precision": "fp32"})


def test_pre_post_policy_tolerates_kernel_drift_but_not_lost_detections_or_decoding():
    host = _dump()
    drifted = _dump(raw_shift=0.01)
    drifted["0/detections"][:, :4] += 0.5  # same objects, boxes a little off: IoU stays above 0.9
    assert all(c.passed for c in compare(host, drifted, "pre-post"))

    lost = _dump(boxes=((10, 10, 50, 50, 0.9, 1),))
    lost["0/detections_from_reference"] = host["0/detections"].copy()
    names = {c.name: c.passed for c in compare(host, lost, "pre-post")}
    assert names["detections agree (class, IoU >= 0.9)"] is False  # 1 of 2 found: below 80 %

    bad_decode = _dump()
    bad_decode["0/detections_from_reference"][0, 5] = 3  # post-processing differs on the device
    assert not next(c for c in compare(host, bad_decode, "pre-post") if "reference" in c.name).passed

    bad_input = _dump()
    bad_input["0/input"][0, 0, 0, 0] = 1e-7  # letterbox/normalisation differs on the device
    assert not next(c for c in compare(host, bad_input, "pre-post") if c.name == "input bit-exact").passed


def test_matched_fraction_needs_the_same_class():
    host = np.asarray([[0, 0, 10, 10, 0.9, 1]], dtype=np.float64)
    assert matched_fraction(host, host.copy()) == (1, 1)
    other = host.copy()
    other[0, 5] = 2
    assert matched_fraction(host, other) == (0, 1)
    assert matched_fraction(host[:0], host) == (0, 0)


def test_emulated_command_pins_the_cpu_and_hides_host_sys(tmp_path):
    cmd = emulated_command(tmp_path, "cortex-a76", ["script.py", "--x"])
    assert cmd[0] == "unshare" and "--mount" in cmd
    script = cmd[cmd.index("-c") + 1]
    assert "mount -t tmpfs" in script and "/sys/devices/system/cpu/possible" in script
    assert "QEMU_CPU=cortex-a76" in script and f'-L "{tmp_path}"' in script
    assert cmd[-2:] == ["script.py", "--x"]


def test_targets_without_an_arm_cpu_are_refused(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "metadata.json").write_text('{"runtime": "coreml"}')
    with pytest.raises(EdgepruneError, match="no emulated CPU"):
        emulate(bundle, load_target("ios"), [tmp_path / "x.jpg"], tmp_path / "out")
    with pytest.raises(EdgepruneError, match="make deploy TARGET=rpi"):
        emulate(tmp_path / "missing", load_target("rpi"), [], tmp_path / "out")


@needs_qemu
@pytest.mark.slow
def test_jetson_cpu_side_under_qemu_matches_host(tmp_path, tiny_data):
    """A Jetson-style ONNX bundle: the bundle's validate_onnx.py on qemu's Cortex-A76 with ONNX Runtime aarch64."""
    import torch

    import edgeprune.env  # noqa: F401
    from edgeprune.data.dataset import load_dataset
    from edgeprune import formats
    from test_device_scripts import DEVICE, _informative, make_bundle
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = _informative(DetectionModel("yolo11n.yaml", nc=6, verbose=False))
    onnx = formats.get("onnx").export(model, tmp_path / "model_fp32.onnx", imgsz=64, precision="fp32")
    bundle = make_bundle(tmp_path / "jetson", onnx, runtime="tensorrt")
    for script in ("validate_onnx.py", "validation_common.py", "device_cli.py", "edgeprune_detector.py"):
        shutil.copy(DEVICE / script, bundle / script)
    images = list(load_dataset(tiny_data).val_images[:3])
    report = emulate(bundle, load_target("jetson"), images, tmp_path / "emulate")
    checks = {c["name"]: c for c in report["checks"]}
    assert report["pass"], checks
    assert checks["input bit-exact"]["detail"].startswith("3/3")
    assert report["emulated_device"]["machine"] == "aarch64"
    assert "not reported" in report["timings"]
    assert not (tmp_path / "emulate" / "emulated-results.json").exists(), "emulated timings are not kept"


def test_github_workflow_runs_deploy_then_emulate():
    import yaml

    from edgeprune.paths import PROJECT_ROOT

    workflow = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / "emulate.yml").read_text())
    steps = workflow["jobs"]["emulate"]["steps"]
    runs = [s.get("run", "") for s in steps]
    deploy = next(i for i, r in enumerate(runs) if r.startswith("make deploy"))
    emulate_step = next(i for i, r in enumerate(runs) if r.startswith("make emulate"))
    assert deploy < emulate_step and any("qemu-user-static" in r for r in runs[:deploy])
