"""Distillation from the unpruned teacher during fine-tuning (issue 3), on a tiny model and dataset."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from copy import deepcopy
from pathlib import Path

import pytest
import torch

from edgeprune.data.dataset import load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.training import distill
from edgeprune.training.baseline import training_curve
from edgeprune.training.trainer import TrainConfig, _KeepArchitectureTrainer, train
from edgeprune import cli
from edgeprune.models.checkpoint import load_model, param_count, save_model
from edgeprune.models.safe_load import load_checkpoint
from edgeprune.pruning.structured import PruneConfig, prune_at_ratio

IMGSZ = 64


def _teacher_and_student():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    teacher = DetectionModel("yolo11n.yaml", nc=6, verbose=False).eval()
    student, _ = prune_at_ratio(teacher, 0.5, PruneConfig(imgsz=IMGSZ))
    return teacher, student


def test_head_distillation_is_zero_for_the_teacher_itself_and_trains_only_the_student():
    teacher, student = _teacher_and_student()
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        same = distill.head_distillation(teacher(x), teacher(x), 2.0)
    assert abs(float(same)) < 1e-5
    student.train()
    for p in student.parameters():
        p.requires_grad_(True)
    frozen = distill.freeze(deepcopy(teacher), "cpu")
    term = distill.head_distillation(student(x), frozen(x), 2.0)
    assert torch.isfinite(term) and float(term.detach()) > 0
    term.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in frozen.parameters()) and not frozen.training


def test_distillation_input_errors():
    teacher, student = _teacher_and_student()
    with pytest.raises(EdgepruneError, match="no teacher was given"):
        train(student, None, TrainConfig(distill_weight=1.0), None)
    with pytest.raises(EdgepruneError, match="distill_weight and distill_features are 0"):
        train(student, None, TrainConfig(), None, teacher=teacher)
    with pytest.raises(EdgepruneError, match="no teacher was given"):
        train(student, None, TrainConfig(distill_features=6.0), None)
    from ultralytics.nn.tasks import DetectionModel

    other = DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    with pytest.raises(EdgepruneError, match="teacher predicts 3 classes"):
        train(student, None, TrainConfig(distill_weight=1.0), None, teacher=other)


def _results(work_dir) -> list[dict]:
    with open(work_dir / "ultralytics" / "results.csv") as f:
        return [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]


def _loads_with_plain_ultralytics(path) -> dict:
    script = textwrap.dedent(f"""
        import json, sys
        from ultralytics import YOLO
        model = YOLO({str(path)!r})
        print(json.dumps({{"edgeprune": "edgeprune" in sys.modules, "type": type(model.model).__name__,
                          "params": sum(p.numel() for p in model.model.parameters())}}))
    """)
    env = {k: v for k, v in os.environ.items() if k.startswith("YOLO_") or k in ("HOME", "PATH", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_one_epoch_distillation_run_from_the_cli(tiny_data, tmp_path, capsys):
    teacher, student = _teacher_and_student()
    teacher_pt, student_pt = save_model(teacher, tmp_path / "teacher.pt"), save_model(student, tmp_path / "student.pt")
    before = {k: v.half().float() for k, v in student.state_dict().items()}  # as saved: fp16
    out, work = tmp_path / "tuned.pt", tmp_path / "work"
    assert cli.main(["finetune", "--model", str(student_pt), "--data", str(tiny_data), "--epochs", "1",
                     "--imgsz", str(IMGSZ), "--batch", "8", "--teacher", str(teacher_pt), "--work-dir", str(work),
                     "--out", str(out)]) == 0
    assert "distilled from" in capsys.readouterr().out
    tuned = load_model(out)
    assert param_count(tuned) == param_count(student)
    kd = float(_results(work)[-1]["train/kd_loss"])
    assert kd > 0 and kd == kd and kd != float("inf"), "the distillation term is non-zero and finite"
    changed = [k for k, v in tuned.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert sum(k.endswith("conv.weight") for k in changed) > 10, "gradients flowed: conv weights changed"
    for name in ("best.pt", "last.pt"):
        path = work / "ultralytics" / "weights" / name
        report = _loads_with_plain_ultralytics(path)
        assert report == {"edgeprune": False, "type": "DetectionModel", "params": param_count(student)}
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        assert getattr(ckpt["model"], "criterion", None) is None, "no criterion (and so no teacher) saved"
        assert param_count(ckpt["model"]) == param_count(student), "no teacher weights inside"


def _train_interrupted_after_epoch_1(monkeypatch, student, dataset, cfg, work, teacher) -> Path:
    """Train until epoch 1 is written, then stop as if Ctrl-C came; returns the unfinished last.pt."""
    original_save = _KeepArchitectureTrainer.save_model

    def save_then_crash(self):
        original_save(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(_KeepArchitectureTrainer, "save_model", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(deepcopy(student), dataset, cfg, work, teacher=teacher)
    monkeypatch.setattr(_KeepArchitectureTrainer, "save_model", original_save)
    return work / "ultralytics" / "weights" / "last.pt"


@pytest.mark.slow
def test_distillation_resumes_from_last_pt(tiny_data, tmp_path, monkeypatch, capsys):
    teacher, student = _teacher_and_student()
    cfg = TrainConfig(epochs=2, imgsz=IMGSZ, batch=8, warmup_epochs=0.0, close_mosaic=0, distill_weight=1.0)
    dataset = load_dataset(tiny_data)
    last = _train_interrupted_after_epoch_1(monkeypatch, student, dataset, cfg, tmp_path, teacher)
    assert type(torch.load(last, map_location="cpu", weights_only=False)["ema"]).__name__ == "DetectionModel"
    unfinished = load_checkpoint(last)  # without --trust-checkpoint
    assert (unfinished["epoch"], unfinished["train_args"]["epochs"]) == (0, 2), "what the resume check compares"
    tuned = train(deepcopy(student), dataset, cfg, tmp_path, teacher=teacher)
    assert "resuming interrupted training" in capsys.readouterr().out
    rows = _results(tmp_path)
    assert [int(float(r["epoch"])) for r in rows] == [1, 2], "epoch 2 resumed, epoch 1 not redone"
    curve = training_curve(tmp_path / "ultralytics" / "results.csv")
    assert curve["segments"] == 2, "a restart from scratch would have deleted epoch 1's row and its clock"
    assert all(float(r["train/kd_loss"]) > 0 for r in rows)
    assert param_count(tuned) == param_count(student)


@pytest.mark.slow
def test_feature_distillation_resumes_and_leaves_a_plain_student(tiny_data, tmp_path, monkeypatch, capsys):
    """Ultralytics' own distillation (its `distill_model`) on the pruned student: its loss is logged, an interrupted
    run resumes from a last.pt that still wraps teacher and student (read without --trust-checkpoint), and the
    finished weights are the pruned student alone."""
    teacher, student = _teacher_and_student()
    cfg = TrainConfig(epochs=2, imgsz=IMGSZ, batch=8, warmup_epochs=0.0, close_mosaic=0, distill_features=6.0)
    dataset = load_dataset(tiny_data)
    last = _train_interrupted_after_epoch_1(monkeypatch, student, dataset, cfg, tmp_path, teacher)
    assert type(torch.load(last, map_location="cpu", weights_only=False)["ema"]).__name__ == "DistillationModel"
    assert load_checkpoint(last)["epoch"] == 0, "the unfinished wrapper is read safely"
    tuned = train(deepcopy(student), dataset, cfg, tmp_path, teacher=teacher)
    assert "resuming interrupted training" in capsys.readouterr().out
    rows = _results(tmp_path)
    assert [int(float(r["epoch"])) for r in rows] == [1, 2]
    assert all(float(r["train/dis_loss"]) > 0 for r in rows), "the feature term is on in both segments"
    assert "train/kd_loss" not in rows[0], "the head term stays off at distill_weight 0"
    assert param_count(tuned) == param_count(student)
    report = _loads_with_plain_ultralytics(tmp_path / "ultralytics" / "weights" / "best.pt")
    assert report == {"edgeprune": False, "type": "DetectionModel", "params": param_count(student)}
