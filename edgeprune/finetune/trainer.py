"""Train a DetectionModel in place with Ultralytics' trainer, keeping its (possibly pruned) architecture.

`YOLO('pruned.pt').train()` rebuilds the full model from the yaml and silently undoes pruning.
Handing the trainer a ready nn.Module makes it skip that rebuild; we then assert that the
parameter count is unchanged so an architecture change can never pass unnoticed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import torch_utils

from edgeprune.data.dataset import Dataset
from edgeprune.models.checkpoint import load_model, param_count

torch_utils.NUM_THREADS = os.cpu_count() or 1  # Ultralytics leaves one core idle; on 2 cores that halves speed


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    imgsz: int = 256
    batch: int = 16
    seed: int = 0
    lr0: float = 0.01
    optimizer: str = "SGD"
    warmup_epochs: float = 1.0
    close_mosaic: int = 2
    patience: int = 100
    device: str = ""  # "" lets Ultralytics pick: CUDA when present, several ids for DDP

    def overrides(self, data_yaml: Path, project: Path) -> dict:
        values = asdict(self)
        values.update(data=str(data_yaml), project=str(project.parent.resolve()), name=project.name, exist_ok=True,
                      deterministic=True, plots=False, val=True, amp=torch.cuda.is_available(), workers=0,
                      pretrained=False, verbose=False, model="edgeprune-in-memory.yaml")
        if not values["device"]:
            values.pop("device")
        return values


class _KeepArchitectureTrainer(DetectionTrainer):
    """DetectionTrainer that trains the module it is given instead of building one from a yaml."""

    model_to_train: torch.nn.Module | None = None

    def setup_model(self):
        if self.args.resume:  # an interrupted run: weights, EMA and optimizer come from last.pt
            from ultralytics.nn.tasks import load_checkpoint

            self.model, ckpt = load_checkpoint(self.args.resume)
            return ckpt
        self.model = self.model_to_train
        return None


def _finished_epochs(last: Path) -> int:
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    return int(ckpt.get("epoch", -1)) + 1


def train(model: torch.nn.Module, dataset: Dataset, cfg: TrainConfig, work_dir: Path) -> torch.nn.Module:
    """Train `model` on `dataset`; returns the best (EMA) weights in float32 with the same architecture."""
    params_before = param_count(model)
    data_yaml = dataset.ultralytics_yaml(work_dir / "data.yaml")
    model = model.float().train()
    for p in model.parameters():
        p.requires_grad_(True)
    overrides = cfg.overrides(data_yaml, work_dir / "ultralytics")
    weights = (work_dir / "ultralytics" / "weights").resolve()
    last = weights / "last.pt"
    done = _finished_epochs(last) if last.exists() else 0
    if 0 < done < cfg.epochs:
        print(f"resuming interrupted training from {last} (epoch {done} of {cfg.epochs})")
        overrides["resume"] = str(last)
    elif last.exists() and done < cfg.epochs:
        last.unlink()
    if done < cfg.epochs:
        trainer = _KeepArchitectureTrainer(overrides=overrides)
        trainer.model_to_train = model
        trainer.train()
    best = weights / "best.pt" if (weights / "best.pt").exists() else last
    trained = load_model(best).float().eval()
    if param_count(trained) != params_before:
        raise RuntimeError(f"training changed the architecture: {params_before} -> {param_count(trained)} parameters")
    return trained
