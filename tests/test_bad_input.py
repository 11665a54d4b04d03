"""Every bad-input class a user can hit: exit 2, exactly one `edgeprune: error: … — fix: …` line, no traceback,
and the run and bundle folders unchanged byte for byte (a finished run's manifest is not rewritten)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeprune.cli import main
from edgeprune.manifest import scratch_dir, sweep_leftovers
from edgeprune.models.checkpoint import save_model

MARKER = "edgeprune-payload-ran"


class _Payload:
    """A pickle that creates a file when loaded: the attack a downloaded checkpoint can carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _snapshot(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for folder in folders if folder.exists() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture()
def finished(tmp_path):
    """A finished run folder and bundle folder, whose bytes no failed run may change."""
    run, dist = tmp_path / "run", tmp_path / "dist"
    (run / "baseline").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"request": {"model": "earlier.pt"}, "stages": {}}))
    (run / "baseline" / "model.pt").write_bytes(b"finished stage output")
    (dist / "rpi").mkdir(parents=True)
    (dist / "rpi" / "metadata.json").write_text("{}")
    return run, dist


def _copy_dataset(tiny_data: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_data.parent / "synth", tmp_path / "data" / "synth")
    shutil.copy(tiny_data, tmp_path / "data" / "d.yaml")
    return tmp_path / "data" / "d.yaml"


def _truncate_first_image(data_yaml: Path, split: str) -> None:
    image = sorted((data_yaml.parent / "synth" / "images" / split).iterdir())[0]
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 3])


def _case(name: str, tiny_data: Path, tmp_path: Path, tiny_model) -> tuple[list[str], str]:
    """(deploy arguments that differ from a good run, text the error line must contain)."""
    model, data = "yolo11n.yaml", str(tiny_data)
    if name == "target-unknown":
        return ["--target", "toaster"], "unknown target 'toaster'"
    if name == "target-bad-type":
        profile = tmp_path / "t.yaml"
        profile.write_text(Path("targets/rpi.yaml").read_text().replace("  imgsz_candidates: [", "  imgsz: big\n  imgsz_candidates: ["))
        return ["--target", str(profile)], "imgsz is 'big', expected int"
    if name == "model-missing":
        return ["--model", str(tmp_path / "nope.pt")], "does not exist"
    if name == "model-corrupt":
        (tmp_path / "bad.pt").write_bytes(b"\x00" * 100)
        return ["--model", str(tmp_path / "bad.pt")], "corrupt"
    if name == "model-truncated":
        path = save_model(tiny_model, tmp_path / "m.pt")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return ["--model", str(path)], "corrupt"
    if name == "model-malicious":
        torch.save({"model": _Payload(tmp_path / MARKER)}, tmp_path / "evil.pt")
        return ["--model", str(tmp_path / "evil.pt")], "posix.system, which is not on edgeprune's allowlist"
    if name == "model-foreign":
        torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "linear.pt")
        return ["--model", str(tmp_path / "linear.pt")], "holds a Linear, not a YOLO detection model"
    if name == "model-classifier-pt":
        from ultralytics.nn.tasks import ClassificationModel

        torch.save({"model": ClassificationModel("yolo11n-cls.yaml", nc=3, verbose=False)}, tmp_path / "cls.pt")
        return ["--model", str(tmp_path / "cls.pt")], "holds a ClassificationModel"
    if name == "model-classifier-yaml":
        return ["--model", "yolo11n-cls.yaml"], "builds a classify model, not a detector"
    if name == "model-segment-yaml":
        return ["--model", "yolo11n-seg.yaml"], "builds a segment model, not a detector"
    if name == "model-yaml-unknown":
        return ["--model", "yolo99z.yaml"], "model yaml 'yolo99z.yaml' not found"
    if name == "class-mismatch":
        save_model(_three_class_model(), tmp_path / "nc3.pt")
        return ["--model", str(tmp_path / "nc3.pt")], "class count mismatch"
    if name == "data-missing":
        return ["--data", str(tmp_path / "nope.yaml")], "dataset yaml"
    if name in ("data-truncated-val", "data-truncated-train"):
        data_yaml = _copy_dataset(tiny_data, tmp_path)
        _truncate_first_image(data_yaml, name.rsplit("-", 1)[1])
        return ["--data", str(data_yaml)], "cannot be decoded"
    if name == "data-no-labels":
        data_yaml = _copy_dataset(tiny_data, tmp_path)
        shutil.rmtree(data_yaml.parent / "synth" / "labels")
        return ["--data", str(data_yaml)], "has a label file"
    if name == "data-bad-label":
        data_yaml = _copy_dataset(tiny_data, tmp_path)
        label = sorted((data_yaml.parent / "synth" / "labels" / "train").glob("*.txt"))[0]
        label.write_text("0 0.5 0.5 0.2\n")
        return ["--data", str(data_yaml)], "malformed label row"
    options = {"epochs-negative": (["--epochs", "-1"], "--epochs: must be >= 0"),
               "epochs-not-a-number": (["--epochs", "ten"], "--epochs: 'ten' is not an integer"),
               "imgsz-zero": (["--imgsz", "0"], "--imgsz: must be >= 32"),
               "imgsz-not-stride": (["--imgsz", "100"], "multiple of 32"),
               "flops-out-of-range": (["--flops-reduction", "1.5"], "must be in [0, 0.95)"),
               "calibration-zero": (["--calibration-images", "0"], "--calibration-images: must be >= 1"),
               "budget-unreachable": (["--budget", "0.001"], "cannot be met: the fastest candidate")}
    return options[name]


def _three_class_model():
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel("yolo11n.yaml", nc=3, verbose=False)


CASES = ["target-unknown", "target-bad-type", "model-missing", "model-corrupt", "model-truncated", "model-malicious",
         "model-foreign", "model-classifier-pt", "model-classifier-yaml", "model-segment-yaml", "model-yaml-unknown",
         "class-mismatch", "data-missing", "data-truncated-val", "data-truncated-train", "data-no-labels",
         "data-bad-label", "epochs-negative", "epochs-not-a-number", "imgsz-zero", "imgsz-not-stride",
         "flops-out-of-range", "calibration-zero", "budget-unreachable"]


@pytest.mark.parametrize("case", CASES)
def test_deploy_bad_input(case, tiny_data, tiny_model, finished, tmp_path, capsys):
    run, dist = finished
    before = _snapshot(run, dist)
    changes, expected = _case(case, tiny_data, tmp_path, tiny_model)
    args = {"--target": "rpi", "--model": "yolo11n.yaml", "--data": str(tiny_data), "--imgsz": "64"}
    args.update(dict(zip(changes[::2], changes[1::2])))
    args.setdefault("--epochs", "1")
    argv = ["deploy", *[x for pair in args.items() for x in pair], "--baseline-epochs", "1", "--out", str(dist),
            "--run-dir", str(run)]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("edgeprune: error:")]
    assert code == 2, err
    assert len(errors) == 1 and expected in errors[0] and " — fix: " in errors[0], err
    assert "Traceback" not in err
    assert _snapshot(run, dist) == before, "a failed run must not write into the run or bundle folder"
    assert not (tmp_path / MARKER).exists(), "the checkpoint's payload ran"


def test_malicious_checkpoint_through_the_real_cli(tmp_path):
    """As a user runs it: a separate process, every stage's loader; the payload's side effect must not happen."""
    torch.save({"model": _Payload(tmp_path / MARKER), "ema": None}, tmp_path / "evil.pt")
    for command in (["deploy", "--target", "rpi", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "d")],
                    ["prune", "--out", str(tmp_path / "p.pt")], ["sensitivity"]):
        out = subprocess.run([sys.executable, "-m", "edgeprune.cli", *command, "--model", str(tmp_path / "evil.pt")],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert out.stderr.count("edgeprune: error:") == 1 and "--trust-checkpoint" in out.stderr
        assert not (tmp_path / MARKER).exists(), f"{command[0]} ran the checkpoint's code"
    assert not (tmp_path / "run").exists() and not (tmp_path / "p.pt").exists()


def test_trust_checkpoint_is_an_explicit_opt_in(tmp_path, capsys):
    from edgeprune.errors import EdgepruneError
    from edgeprune.models.checkpoint import load_model

    torch.save({"model": _Payload(tmp_path / MARKER)}, tmp_path / "evil.pt")
    with pytest.raises(EdgepruneError, match="not a YOLO detection model"):
        load_model(tmp_path / "evil.pt", trust=True)  # the user said they trust it: it loads (and runs)
    assert (tmp_path / MARKER).exists()
    assert "--trust-checkpoint" in capsys.readouterr().err, "a trusted load says loudly what it does"


def test_allowlist_loads_what_edgeprune_and_ultralytics_write(tiny_model, tmp_path):
    """Our own checkpoints (plain, pruned, every family) and Ultralytics' training checkpoints load safely."""
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.patches import torch_save

    from edgeprune.models.checkpoint import load_model
    from edgeprune.models.safe_load import load_checkpoint
    from edgeprune.pruning.structured import PruneConfig, prune

    pruned, _ = prune(tiny_model, PruneConfig(flops_reduction=0.3, imgsz=64))
    for name, model in [("pruned", pruned), *((y, DetectionModel(y, nc=6, verbose=False).eval())
                                              for y in ("yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml"))]:
        assert load_model(save_model(model, tmp_path / f"{name}.pt")).model[-1].nc == 6
    # Ultralytics' trainer layout: EMA model, optimizer state, numpy metrics, train args
    import numpy as np

    ckpt = {"epoch": 3, "best_fitness": np.float64(0.5), "model": None, "ema": DetectionModel("yolo11n.yaml", nc=6,
                                                                                                 verbose=False),
            "updates": 10, "optimizer": torch.optim.SGD(tiny_model.parameters(), lr=0.01).state_dict(),
            "train_args": {"imgsz": 64}, "train_metrics": {"metrics/mAP50(B)": np.float32(0.1)},
            "train_results": {"epoch": [1, 2], "loss": np.array([1.0, 0.5])}, "date": "2026-12-03", "version": "8.4"}
    from ultralytics.utils import IterableSimpleNamespace

    ckpt["ema"].args = IterableSimpleNamespace(imgsz=64)  # an unfinished run keeps its arguments on the model
    torch_save(ckpt, tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_half_written_last_pt_restarts_the_stage(tiny_model, tmp_path, capsys):
    from edgeprune.training.trainer import _finished_epochs

    weights = tmp_path / "ultralytics" / "weights"
    weights.mkdir(parents=True)
    last = save_model(tiny_model, weights / "last.pt")
    (weights / "best.pt").write_bytes(last.read_bytes())
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # killed while Ultralytics wrote it
    assert _finished_epochs(last, trust=False, overrides={}) == 0
    assert not weights.exists(), "the broken run's weights are dropped, so training starts again cleanly"
    assert "cannot be resumed from" in capsys.readouterr().err


def test_an_unfinished_run_with_other_settings_is_refused_not_resumed(tmp_path):
    from ultralytics.utils.patches import torch_save

    from edgeprune.errors import EdgepruneError
    from edgeprune.training.trainer import _finished_epochs

    last = tmp_path / "baseline" / "ultralytics" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    torch_save({"epoch": 119, "train_args": {"epochs": 300, "imgsz": 256, "seed": 0}}, last)
    assert _finished_epochs(last, trust=False, overrides={"epochs": 300, "imgsz": 256, "seed": 0}) == 120
    with pytest.raises(EdgepruneError, match="epochs=300; this one asks for epochs=60") as error:
        _finished_epochs(last, trust=False, overrides={"epochs": 60, "imgsz": 256, "seed": 0})
    assert "another work dir" in error.value.fix and last.exists(), "120 epochs of someone's run are kept"


def test_leftovers_of_a_killed_run_are_swept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    (run / "export-rpi").mkdir(parents=True)
    (run / "export-rpi" / ".model_int8.tflite.x1y2.partial").write_bytes(b"half")
    (run / "export-rpi" / f".edgeprune-guard-{dead.pid}-abc").mkdir()
    (tmp_path / "dist" / "rpi.partial").mkdir(parents=True)
    with scratch_dir("test", dir=run) as live:  # this process's own scratch folder is in use: kept
        removed = sweep_leftovers(run, tmp_path / "dist")
        assert Path(live).exists()
    names = {p.name for p in removed}
    assert {".model_int8.tflite.x1y2.partial", f".edgeprune-guard-{dead.pid}-abc", "rpi.partial"} <= names
    assert not list(run.rglob("*.partial")) and not (tmp_path / "dist" / "rpi.partial").exists()


def _good_results() -> dict:
    stage = {"p50": 1.0, "p90": 1.2, "p99": 1.5, "mean": 1.1, "min": 0.9, "max": 1.6, "fps": 900.0, "runs": 5}
    return {"target": "rpi", "runtime": "tflite", "runtime_version": "2.3.0", "model": "model_int8.tflite",
            "model_sha256": "a" * 64, "precision": "int8", "imgsz": 64, "device": {"machine": "aarch64"},
            "threads": 4, "warmup": 2, "runs": 5, "image": "random", "detections": 3,
            "latency_ms": {s: dict(stage) for s in ("preprocess", "infer", "postprocess", "end_to_end")},
            "budget": {"ms": 40, "percentile": 90, "on": "end_to_end", "measured_ms": 1.2, "pass": True},
            "dry_run": False, "timestamp": "2026-12-03T00:00:00+00:00"}


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda r: "not json {", "cannot be read"),
    (lambda r: [r], "results is list, expected an object"),
    (lambda r: {k: v for k, v in r.items() if k != "budget"}, "results misses budget"),
    (lambda r: {**r, "extra": 1}, "unknown key(s) extra"),
    (lambda r: {**r, "latency_ms": {**r["latency_ms"], "infer": {**r["latency_ms"]["infer"], "p90": "fast"}}},
     "results.latency_ms.infer.p90 is str"),
    (lambda r: {**r, "budget": {**r["budget"], "pass": "yes"}}, "results.budget.pass is str"),
    (lambda r: {**r, "threads": True}, "results.threads is True"),
    (lambda r: {**r, "budget": {**r["budget"], "measured_ms": -1}}, "expected >= 0"),
    (lambda r: r, "are for model sha256 aaaaaaaaaaaa"),
])
def test_validate_refuses_bad_results(mutate, expected, tmp_path, capsys):
    bundle = tmp_path / "rpi"
    bundle.mkdir()
    (bundle / "metadata.json").write_text(json.dumps({"model": "m.tflite", "files": {"m.tflite": "b" * 64},
                                                      "device_results": []}))
    data = mutate(_good_results())
    (tmp_path / "r.json").write_text(data if isinstance(data, str) else json.dumps(data))
    before = _snapshot(bundle)
    assert main(["validate", str(bundle), "--results", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and " — fix: " in err, err
    assert _snapshot(bundle) == before, "nothing is written into the bundle"


def test_prune_and_finetune_refuse_bad_numbers_in_one_line(capsys):
    for argv in (["prune", "--model", "m.pt", "--out", "o.pt", "--round-to", "0"],
                 ["finetune", "--model", "m.pt", "--out", "o.pt", "--batch", "-4"],
                 ["prune", "--model", "m.pt", "--out", "o.pt", "--flops", "0.99"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("edgeprune: error: argument"), err


def test_shipped_baselines_go_by_short_name(tmp_path):
    """MODEL=yolo11n is the shipped baseline of the bundled data; an unknown short name, or a shipped name with
    another dataset, is one clear line."""
    from edgeprune.errors import EdgepruneError
    from edgeprune.preflight import BUNDLED_YAML, DEFAULT_BASELINE, resolve_model

    assert resolve_model("yolo11n", str(BUNDLED_YAML)) == str(DEFAULT_BASELINE)
    assert resolve_model("yolo11n.yaml", str(BUNDLED_YAML)) == "yolo11n.yaml", "a yaml is built, not looked up"
    with pytest.raises(EdgepruneError, match="neither a file nor a shipped baseline") as error:
        resolve_model("yolo99n", str(BUNDLED_YAML))
    assert "yolo11n" in error.value.fix
    with pytest.raises(EdgepruneError, match="shipped baseline of the bundled dataset"):
        resolve_model("yolo11n", str(tmp_path / "mine.yaml"))
