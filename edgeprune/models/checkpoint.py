"""Load, check and save Ultralytics detection models, so that every stage speaks one checkpoint format.

Saved checkpoints use Ultralytics' own layout ({"model": ..., "train_args": ...}) and load with
plain `ultralytics.YOLO(path)`; a pruned model additionally needs `edgeprune` importable, because
its rewritten blocks live in `edgeprune.models.blocks`.
"""

from __future__ import annotations

import io
from copy import deepcopy
from datetime import datetime, timezone
from pathlib import Path

import torch
import edgeprune.env  # noqa: F401, I001  (Ultralytics offline settings before it is imported)
from ultralytics.nn.tasks import DetectionModel

from edgeprune.errors import EdgepruneError
from edgeprune.manifest import atomic_write_bytes
from edgeprune.models.safe_load import load_checkpoint


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


MODEL_YAML_SUFFIXES = (".yaml", ".yml")


def is_model_yaml(spec: str) -> bool:
    """MODEL names an Ultralytics model yaml (built, then trained) rather than a checkpoint."""
    return str(spec).endswith(MODEL_YAML_SUFFIXES)


def use_nms_free_head(model: DetectionModel) -> DetectionModel:
    """Infer with an end-to-end model's one-to-one head (YOLO26), the NMS-free graph every target deploys.

    Ultralytics 8.4 builds and loads such models on their one-to-many head plus NMS unless asked otherwise
    (`nms=False`); the one-to-one head is the one that needs no NMS on the device and that its CPU speed
    claims are measured with. Models without a one-to-one head are left as they are.
    """
    head = model.model[-1]
    if getattr(head, "one2one_cv2", None) is not None:
        head.end2end = True
    return model


def unused_head_branch(model: torch.nn.Module) -> tuple[str, ...]:
    """The head's attributes the exported graph drops. An end-to-end head (YOLO26) computes its one-to-many and
    one-to-one branches in eval mode, but export keeps only the one it infers with (Ultralytics' Detect.fuse):
    the other costs nothing on the device."""
    head = model.model[-1]
    if getattr(head, "one2one_cv2", None) is None or getattr(head, "cv2", None) is None:
        return ()
    return ("cv2", "cv3") if head.end2end else ("one2one_cv2", "one2one_cv3")


def build_from_yaml(spec: str, nc: int | None) -> DetectionModel:
    """A fresh, randomly initialised model from an Ultralytics yaml such as 'yolo11n.yaml' (nc None: the yaml's)."""
    try:
        return use_nms_free_head(DetectionModel(spec, nc=nc, verbose=False))
    except FileNotFoundError:
        raise EdgepruneError(f"model yaml {spec!r} not found",
                             "use an Ultralytics model yaml such as yolo11n.yaml, yolov8n.yaml or yolo26n.yaml") from None


def load_model(path: str | Path, trust: bool = False) -> DetectionModel:
    """Load a .pt checkpoint and check it holds a YOLO detection model; float32, eval mode.

    Untrusted files (the default) load through the weights-only unpickler (edgeprune.models.safe_load).
    """
    path = Path(path)
    ckpt = load_checkpoint(path, trust=trust)
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
    if not isinstance(model, DetectionModel) or type(model).__name__ != "DetectionModel":
        kind = type(model).__name__
        raise EdgepruneError(f"{path} holds a {kind}, not a YOLO detection model",
                             "edgeprune deploys detection checkpoints (yolo*n.pt, not -seg/-pose/-cls/-obb)")
    return use_nms_free_head(model.float().eval())


def save_model(model: DetectionModel, path: Path, meta: dict | None = None) -> Path:
    """Write an Ultralytics-format checkpoint atomically (fp16 weights, like Ultralytics' own)."""
    snapshot = deepcopy(model).half().eval()
    for p in snapshot.parameters():
        p.requires_grad_(False)
    buffer = io.BytesIO()
    torch.save({"model": snapshot, "ema": None, "train_args": dict(getattr(model, "args", {}) or {}),
                "date": datetime.now(timezone.utc).isoformat(), "edgeprune": meta or {}}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def model_nc(model: DetectionModel) -> int:
    """Class count from the head itself (DetectionModel.nc exists only after Ultralytics' trainer ran)."""
    return int(model.model[-1].nc)


def check_classes(model: DetectionModel, names: tuple[str, ...], model_ref: str, data_ref: str) -> None:
    nc = model_nc(model)
    if nc != len(names):
        raise EdgepruneError(
            f"class count mismatch: model {model_ref} predicts {nc} classes, dataset {data_ref} has {len(names)}",
            "use a dataset with the model's classes, or a model trained on this dataset (MODEL=yolo11n.yaml trains one)")
