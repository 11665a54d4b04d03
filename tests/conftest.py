"""Shared fixtures: a tiny synthetic dataset and a tiny model, so tests stay fast on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgeprune.env  # noqa: F401  (offline Ultralytics settings)
from edgeprune.data.build import build_synth


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """16 train / 8 val images of 128 px; returns the dataset yaml."""
    root = tmp_path_factory.mktemp("tiny")
    yaml_path, _ = build_synth(root / "synth", root / "tiny.yaml", train=16, val=8, imgsz=128, seed=3)
    return yaml_path


@pytest.fixture(scope="session")
def tiny_model():
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel("yolo11n.yaml", nc=6, verbose=False).eval()
