"""A non-editable install is self-contained: the wheel carries profiles, baseline and device files, and a
deploy from another folder writes its runs and bundle there, not into the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args, **kwargs):
    out = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert out.returncode == 0, (out.stdout[-1500:], out.stderr[-3000:])
    return out


def test_wheel_install_deploys_outside_the_source_tree(tmp_path):
    source = tmp_path / "src"  # a copy, so building leaves nothing in the checkout
    shutil.copytree(ROOT / "edgeprune", source / "edgeprune", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
          str(tmp_path / "wheel"), str(source)])
    wheel = next((tmp_path / "wheel").glob("edgeprune-*.whl"))
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(site),
          str(wheel)])
    for packaged in ("profiles/rpi.yaml", "baselines/yolo11n-synth.pt", "device/validate_tflite.py"):
        assert (site / "edgeprune" / packaged).is_file(), packaged

    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = _run([sys.executable, "-c", "import edgeprune; print(edgeprune.__file__)"], cwd=work, env=env)
    assert where.stdout.strip().startswith(str(site)), "the installed copy, not the checkout"
    _run([sys.executable, "-m", "edgeprune.cli", "deploy", "--target", "rpi", "--imgsz", "64", "--epochs", "1",
          "--calibration-images", "4", "--eval-limit", "8"], cwd=work, env=env)
    assert (work / "dist" / "rpi" / "metadata.json").is_file() and (work / "runs" / "rpi" / "manifest.json").is_file()
    assert (work / "datasets" / "synth.yaml").is_file(), "the bundled dataset is generated where the user works"
