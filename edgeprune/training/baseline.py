"""Train the project's own baseline from a YOLO yaml and record how, so anyone can reproduce it.

No COCO-pretrained weights can be fetched here, so the embedded default starts from a model this
project trains on its bundled dataset. The checkpoint ships with a provenance file (command, seed,
data hash, metrics, tool versions, the validation curve); `make baseline` re-creates both from the seed.
A long CPU run is interrupted and resumed from Ultralytics' last.pt, so its wall time is summed over the
segments of results.csv rather than timed by the one process that finishes it.
"""

from __future__ import annotations

import csv
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from edgeprune.data.dataset import Dataset
from edgeprune.evaluation.detection import evaluate_model
from edgeprune.training.trainer import RESUMES, TrainConfig, train
from edgeprune.manifest import atomic_write_json, sha256_file, tool_versions
from edgeprune.models.checkpoint import build_from_yaml, save_model


CURVE_METRIC = "metrics/mAP50-95(B)"


def training_curve(results_csv: Path) -> dict:
    """Ultralytics' per-epoch validation mAP50-95 and the wall time of a run that may have been resumed.

    Ultralytics restarts its clock on resume; the trainer notes the row each resumed segment starts at
    (trainer.RESUMES), and the wall time is the sum of every segment's last `time` (an epoch cut off by the
    interruption is lost). An epoch validated again after a resume keeps its last value.
    """
    with open(results_csv, newline="", encoding="utf-8") as f:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
    resumes = results_csv.parent / RESUMES
    starts = {int(line) for line in resumes.read_text().split()} if resumes.is_file() else set()
    ends = sorted(i for i in starts if 0 < i < len(rows)) + [len(rows)]
    per_epoch = {int(float(r["epoch"])): round(float(r[CURVE_METRIC]), 4) for r in rows}
    wall = sum(float(rows[end - 1]["time"]) for end in ends) if rows else 0.0
    return {"metric": f"Ultralytics val {CURVE_METRIC}, per epoch",
            "epochs": list(per_epoch), "map50_95": list(per_epoch.values()),
            "segments": len(ends), "wall_s": round(wall, 1)}


def train_baseline(model_yaml: str, dataset: Dataset, cfg: TrainConfig, out: Path, work_dir: Path) -> dict:
    torch.manual_seed(cfg.seed)
    model = build_from_yaml(model_yaml, dataset.nc)
    start = time.time()
    trained = train(model, dataset, cfg, work_dir)
    wall = time.time() - start
    results = Path(work_dir) / "ultralytics" / "results.csv"
    curve = training_curve(results) if results.is_file() else None
    trained.names = dict(enumerate(dataset.names))
    metrics = evaluate_model(trained, dataset, cfg.imgsz)
    provenance = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "model_yaml": model_yaml, "train_config": asdict(cfg), "seed": cfg.seed,
        "data": {"yaml": str(dataset.yaml_path), "sha256": dataset.content_hash(),
                 "train_images": len(dataset.train_images), "val_images": len(dataset.val_images)},
        "metrics": metrics, "train_wall_s": curve["wall_s"] if curve else round(wall, 1),
        "threads": torch.get_num_threads(), "tools": tool_versions(),
    }
    if curve:
        provenance["curve"] = curve
    save_model(trained, out, meta={"baseline": provenance})
    provenance["checkpoint_sha256"] = sha256_file(out)
    atomic_write_json(out.with_suffix(".json"), provenance)
    return provenance
