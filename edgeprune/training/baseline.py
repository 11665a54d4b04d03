"""Train the project's own baseline from a YOLO yaml and record how, so anyone can reproduce it.

No COCO-pretrained weights can be fetched here, so the embedded default starts from a model this
project trains on its bundled dataset. The checkpoint ships with a provenance file (command, seed,
data hash, metrics, tool versions); `make baseline` re-creates both from the seed.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from edgeprune.data.dataset import Dataset
from edgeprune.evaluation.detection import evaluate_model
from edgeprune.training.trainer import TrainConfig, train
from edgeprune.manifest import atomic_write_json, sha256_file, tool_versions
from edgeprune.models.checkpoint import build_from_yaml, save_model


def train_baseline(model_yaml: str, dataset: Dataset, cfg: TrainConfig, out: Path, work_dir: Path) -> dict:
    torch.manual_seed(cfg.seed)
    model = build_from_yaml(model_yaml, dataset.nc)
    start = time.time()
    trained = train(model, dataset, cfg, work_dir)
    wall = time.time() - start
    trained.names = dict(enumerate(dataset.names))
    metrics = evaluate_model(trained, dataset, cfg.imgsz)
    provenance = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "model_yaml": model_yaml, "train_config": asdict(cfg), "seed": cfg.seed,
        "data": {"yaml": str(dataset.yaml_path), "sha256": dataset.content_hash(),
                 "train_images": len(dataset.train_images), "val_images": len(dataset.val_images)},
        "metrics": metrics, "train_wall_s": round(wall, 1), "threads": torch.get_num_threads(),
        "tools": tool_versions(),
    }
    save_model(trained, out, meta={"baseline": provenance})
    provenance["checkpoint_sha256"] = sha256_file(out)
    atomic_write_json(out.with_suffix(".json"), provenance)
    return provenance
