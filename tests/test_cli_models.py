"""`edgeprune prune` and `finetune` take a model yaml (random weights, said so) as well as a checkpoint."""

from __future__ import annotations

import pytest

from edgeprune.cli import main
from edgeprune.models.checkpoint import load_model, model_nc


def test_prune_accepts_a_model_yaml(tiny_data, tmp_path, capsys):
    out = tmp_path / "pruned.pt"
    assert main(["prune", "--model", "yolov8n.yaml", "--flops", "0.3", "--imgsz", "64", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "yolov8n.yaml is a model yaml: built with random weights (the yaml's 80 classes" in printed
    assert model_nc(load_model(out)) == 80 and "pruned ->" in printed
    assert main(["prune", "--model", "yolo11n.yaml", "--data", str(tiny_data), "--flops", "0.3", "--imgsz", "64",
                 "--out", str(out)]) == 0
    assert "6 classes from --data" in capsys.readouterr().out and model_nc(load_model(out)) == 6


@pytest.mark.slow
def test_finetune_accepts_a_model_yaml(tiny_data, tmp_path, capsys):
    out = tmp_path / "tuned.pt"
    assert main(["finetune", "--model", "yolo11n.yaml", "--data", str(tiny_data), "--epochs", "1", "--imgsz", "64",
                 "--batch", "8", "--out", str(out)]) == 0
    assert "built with random weights (6 classes from --data)" in capsys.readouterr().out
    assert model_nc(load_model(out)) == 6


def test_prune_refuses_a_non_detection_yaml(capsys):
    assert main(["prune", "--model", "yolo11n-seg.yaml", "--out", "x.pt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "builds a segment model, not a detector" in err
