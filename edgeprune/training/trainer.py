"""Train a DetectionModel in place with Ultralytics' trainer, keeping its (possibly pruned) architecture.

`YOLO('pruned.pt').train()` rebuilds the full model from the yaml and silently undoes pruning.
Handing the trainer a ready nn.Module makes it skip that rebuild; we then assert that the
parameter count is unchanged so an architecture change can never pass unnoticed.
With a teacher, the training model's loss criterion also distils from its head outputs (finetune.distill), and/or
Ultralytics' own feature distillation (its `distill_model`: neck features through learned projectors) runs.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import edgeprune.env  # noqa: F401, I001  (Ultralytics offline settings before it is imported)
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import torch_utils

from edgeprune.data.dataset import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.training import distill, end2end, sparsity
from edgeprune.models.checkpoint import load_model, model_nc, param_count, save_model
from edgeprune.models.safe_load import load_checkpoint
from edgeprune.quantize import qat

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
    distill_weight: float = 0.0  # weight of the distillation term when train() gets a teacher (0: no teacher)
    distill_temperature: float = 2.0  # softens teacher and student outputs before they are compared
    distill_features: float = 0.0  # > 0: Ultralytics' feature distillation from the teacher at this weight (its `dis`)
    qat: str = ""  # quantization-aware: "" off, "asymmetric" (TFLite ranges) or "symmetric" (TensorRT/QDQ ranges)
    sparsity: float = 0.0  # > 0: L1 penalty on BatchNorm scales with this weight (sparsity before a cut)
    end2end_gains: tuple = ()  # (one-to-many, one-to-one) held for the run; () keeps Ultralytics' decay (end2end.py)

    @property
    def distills(self) -> bool:
        """Either kind of distillation is on, so training needs the teacher."""
        return self.distill_weight > 0 or self.distill_features > 0

    def overrides(self, data_yaml: Path, project: Path) -> dict:
        values = {k: v for k, v in asdict(self).items()  # edgeprune's own settings are not Ultralytics arguments
                  if not k.startswith("distill_") and k not in ("qat", "sparsity", "end2end_gains")}
        values.update(data=str(data_yaml), project=str(project.parent.resolve()), name=project.name, exist_ok=True,
                      deterministic=True, plots=False, val=True, amp=torch.cuda.is_available(), workers=0,
                      pretrained=False, verbose=False, model="edgeprune-in-memory.yaml")
        if not values["device"]:
            values.pop("device")
        return values


def finetune_recipe(epochs: int, imgsz: int, **changes) -> TrainConfig:
    """The recipe deploy uses after pruning: full lr at once (the weights are trained), no mosaic for the last third."""
    values = {"lr0": 0.01, "warmup_epochs": 0.0, "close_mosaic": max(1, epochs // 3), **changes}
    return TrainConfig(epochs=epochs, imgsz=imgsz, **values)


def _rewrap_distillation(saved: torch.nn.Module, args) -> torch.nn.Module:
    """Ultralytics' DistillationModel again around the saved (pruned) student, its teacher re-read from
    `args.distill_model` and its trained projectors restored, as Ultralytics' own resume does for a yaml model."""
    from ultralytics.nn.distill_model import DistillationModel

    student = saved.student_model
    student.args = args
    model = DistillationModel(student_model=student, teacher_model=args.distill_model)
    model.projector.load_state_dict(saved.projector.state_dict())
    return model


class _KeepArchitectureTrainer(DetectionTrainer):
    """DetectionTrainer that trains the module it is given instead of building one from a yaml.

    The module is set as `trainer.model` before train(): with several GPUs Ultralytics pickles exactly
    that attribute (and the callbacks) for its DDP workers, so the pruned architecture reaches every
    worker; distillation and QAT ride along as a callback for the same reason.
    """

    def setup_model(self):
        if self.args.resume:  # an interrupted run: weights, EMA and optimizer come from last.pt
            from ultralytics.nn.tasks import load_checkpoint

            self.model, ckpt = load_checkpoint(self.args.resume)
            if hasattr(self.model, "student_model"):  # feature distillation: the teacher was left out of last.pt
                self.model = _rewrap_distillation(self.model, self.args)
            return ckpt
        if not isinstance(self.model, torch.nn.Module):
            raise EdgepruneError("the trainer was started without a model module",
                                 "call edgeprune.training.trainer.train(), which hands the module over")
        return None


def _extras_callback(teacher: torch.nn.Module | None, cfg: "TrainConfig"):
    """on_pretrain_routine_end: after Ultralytics made its EMA copy, so neither it nor any checkpoint holds the
    teacher or the fake-INT8 patches; runs in every DDP worker too (callbacks travel with the pickled state)."""
    def attach(trainer) -> None:
        live = torch_utils.unwrap_model(trainer.model)
        live = getattr(live, "student_model", live)  # under feature distillation only the student is patched
        if cfg.end2end_gains:  # first: distillation and sparsity wrap the loss this sets
            end2end.hold_gains(live, *cfg.end2end_gains)
        if teacher is not None and cfg.distill_weight > 0:
            distill.attach(live, teacher, cfg.distill_weight, cfg.distill_temperature)
        if cfg.qat:
            qat.attach(live, symmetric=cfg.qat == "symmetric")
        if cfg.sparsity:
            sparsity.attach(live, cfg.sparsity)
    return attach


RESUMES = "resumed-at-rows.txt"  # results.csv's row count when each resume began: where a training segment starts


def _record_resume(run_dir: Path) -> None:
    """Note where the resumed segment begins in results.csv: Ultralytics restarts its clock on resume and marks
    nothing, so the wall time of a run interrupted across sessions can only be summed with this."""
    results = run_dir / "results.csv"
    rows = max(0, len(results.read_text().splitlines()) - 1) if results.is_file() else 0
    with open(run_dir / RESUMES, "a", encoding="utf-8") as f:
        f.write(f"{rows}\n")


SAME_RUN = ("epochs", "imgsz", "batch", "lr0", "seed", "optimizer", "warmup_epochs", "close_mosaic")


def _finished_epochs(last: Path, trust: bool, overrides: dict) -> int:
    """Epochs recorded in Ultralytics' last.pt; 0 (and its weights folder removed) when it cannot be resumed from.

    Ultralytics writes last.pt in place, so a kill during that write leaves a truncated zip; that file is
    read safely (never as a full pickle unless the run trusts its checkpoints) and never handed on.
    An unfinished run started with other settings is refused, not resumed into a schedule it was not on.
    """
    try:
        ckpt = load_checkpoint(last, trust=trust)
        done = int(ckpt.get("epoch", -1)) + 1
    except (EdgepruneError, AttributeError, TypeError, ValueError) as error:
        print(f"edgeprune: warning: {last} cannot be resumed from ({getattr(error, 'problem', error)}); "
              "training this stage again from its start", file=sys.stderr)
        shutil.rmtree(last.parent)  # best.pt of that run is no more trustworthy than its last.pt
        return 0
    saved = ckpt.get("train_args") or {}
    differ = [k for k in SAME_RUN if k in saved and k in overrides and saved[k] != overrides[k]]
    if done > 0 and differ:
        run_dir = last.parent.parent
        raise EdgepruneError(f"{run_dir} holds an unfinished run started with "
                             f"{', '.join(f'{k}={saved[k]}' for k in differ)}; this one asks for "
                             f"{', '.join(f'{k}={overrides[k]}' for k in differ)}",
                             f"resume it with its own settings, or train in another work dir (or delete {run_dir})")
    return done


def _check_teacher(teacher: torch.nn.Module | None, model: torch.nn.Module, cfg: TrainConfig) -> None:
    weights = f"distill_weight {cfg.distill_weight}, distill_features {cfg.distill_features}"
    if teacher is None and cfg.distills:
        raise EdgepruneError(f"{weights} but no teacher was given",
                             "pass the unpruned model as teacher (--teacher), or set both weights to 0")
    if teacher is not None and not cfg.distills:
        raise EdgepruneError("a teacher was given but distill_weight and distill_features are 0",
                             "set distill_weight (head outputs, e.g. 1.0) or distill_features (e.g. 6.0) > 0")
    if teacher is not None and model_nc(teacher) != model_nc(model):
        raise EdgepruneError(f"the teacher predicts {model_nc(teacher)} classes, the student {model_nc(model)}",
                             "distil from the unpruned model the student was pruned from")


def make_trainer(model: torch.nn.Module, overrides: dict, cfg: TrainConfig,
                 teacher: torch.nn.Module | None = None) -> _KeepArchitectureTrainer:
    """The Ultralytics trainer for `model` with distillation / QAT attached; train() runs it."""
    trainer = _KeepArchitectureTrainer(overrides=overrides)
    if "resume" not in overrides:
        trainer.model = model
    if (teacher is not None and cfg.distill_weight > 0) or cfg.qat or cfg.sparsity or cfg.end2end_gains:
        trainer.add_callback("on_pretrain_routine_end", _extras_callback(teacher, cfg))
    return trainer


def train(model: torch.nn.Module, dataset: Dataset, cfg: TrainConfig, work_dir: Path,
          teacher: torch.nn.Module | None = None, trust: bool = False) -> torch.nn.Module:
    """Train `model` on `dataset`; returns the best (EMA) weights in float32 with the same architecture.

    With a `teacher`, cfg.distill_weight > 0 adds distillation from the teacher's head outputs to the loss and
    cfg.distill_features > 0 Ultralytics' feature distillation; the saved checkpoints hold the student only.
    `trust` lets the run's own checkpoints load as full pickles (only when the user trusted the input model).
    """
    _check_teacher(teacher, model, cfg)
    if cfg.end2end_gains:
        end2end.check_gains(cfg.end2end_gains)
    if cfg.qat not in ("", "asymmetric", "symmetric"):
        raise EdgepruneError(f"unknown QAT mode {cfg.qat!r}", "use 'asymmetric' (TFLite), 'symmetric' (TensorRT/ONNX)")
    params_before = param_count(model)
    data_yaml = dataset.ultralytics_yaml(work_dir / "data.yaml")
    model = model.float().train()
    for p in model.parameters():
        p.requires_grad_(True)
    overrides = cfg.overrides(data_yaml, work_dir / "ultralytics")
    if getattr(model.model[-1], "one2one_cv2", None) is not None:
        overrides["nms"] = False  # validate an end-to-end model on the NMS-free head it is deployed with
    if cfg.distill_features > 0:  # Ultralytics reads its teacher from a file: the run's own copy of ours
        overrides.update(distill_model=str(save_model(teacher, work_dir / "teacher.pt").resolve()),
                         dis=cfg.distill_features)
    weights = (work_dir / "ultralytics" / "weights").resolve()
    last = weights / "last.pt"
    done = _finished_epochs(last, trust, overrides) if last.exists() else 0
    if 0 < done < cfg.epochs:
        print(f"resuming interrupted training from {last} (epoch {done} of {cfg.epochs})")
        overrides["resume"] = str(last)
        _record_resume(weights.parent)
    elif done < cfg.epochs:
        last.unlink(missing_ok=True)
        (weights.parent / RESUMES).unlink(missing_ok=True)  # a fresh run: Ultralytics starts a new results.csv too
    if done < cfg.epochs:
        make_trainer(model, overrides, cfg, teacher).train()
    best = weights / "best.pt" if (weights / "best.pt").exists() else last
    trained = load_model(best, trust=trust).float().eval()
    if param_count(trained) != params_before:
        raise RuntimeError(f"training changed the architecture: {params_before} -> {param_count(trained)} parameters")
    return trained
