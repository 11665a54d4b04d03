"""The baseline's provenance: its validation curve and the wall time of a run resumed across sessions."""

from __future__ import annotations

import json

import pytest

from edgeprune.data.dataset import load_dataset
from edgeprune.training.baseline import CURVE_METRIC, train_baseline, training_curve
from edgeprune.training.trainer import RESUMES, TrainConfig

HEADER = f"epoch,time,train/box_loss,metrics/mAP50(B),{CURVE_METRIC},lr/pg0"


def test_a_resumed_run_sums_its_segments_and_keeps_the_last_value_of_a_repeated_epoch(tmp_path):
    results = tmp_path / "results.csv"
    results.write_text("\n".join([
        HEADER,
        "1,40.5,3.1,0.01,0.002,0.01",
        "2,81.0,2.9,0.05,0.020,0.0099",
        "3,121.7,2.8,0.08,0.031,0.0098",   # killed after epoch 3 was validated, before last.pt was saved
        "3,41.2,2.8,0.09,0.033,0.0098",    # resumed: the clock restarts and epoch 3 runs again
        "4,82.0,2.7,0.10,0.040,0.0097",
    ]) + "\n")
    (tmp_path / RESUMES).write_text("3\n")  # the trainer's note: the resumed segment starts at row 3
    curve = training_curve(results)
    assert curve["epochs"] == [1, 2, 3, 4]
    assert curve["map50_95"] == [0.002, 0.02, 0.033, 0.04]
    assert curve["segments"] == 2
    assert curve["wall_s"] == pytest.approx(121.7 + 82.0)


@pytest.mark.slow
def test_a_trained_baseline_ships_its_curve_beside_it(tiny_data, tmp_path):
    out = tmp_path / "baselines" / "tiny-synth.pt"
    cfg = TrainConfig(epochs=2, imgsz=64, batch=8, seed=0, close_mosaic=0)
    provenance = train_baseline("yolo11n.yaml", load_dataset(tiny_data), cfg, out, tmp_path / "work")
    written = json.loads(out.with_suffix(".json").read_text())
    assert written["curve"] == provenance["curve"]
    assert written["curve"]["epochs"] == [1, 2] and len(written["curve"]["map50_95"]) == 2
    assert written["curve"]["segments"] == 1 and written["train_wall_s"] == written["curve"]["wall_s"] > 0
    assert out.is_file() and written["checkpoint_sha256"]


def test_without_a_resume_note_the_run_is_one_segment(tmp_path):
    results = tmp_path / "results.csv"
    results.write_text(f"{HEADER}\n1,40.5,3.1,0.01,0.002,0.01\n2,81.0,2.9,0.05,0.020,0.0099\n")
    assert (training_curve(results)["segments"], training_curve(results)["wall_s"]) == (1, 81.0)
