"""Knowledge distillation from the unpruned teacher: the student's detection loss plus a head-output term.

Ultralytics 8.4 ships `ultralytics.nn.distill_model.DistillationModel`, but it distils neck features
through trained projector convs and wraps the student, so its mid-training checkpoints are not plain
DetectionModels; a pruned student has the teacher's exact head layout instead, so its raw Detect
outputs can be matched anchor by anchor with no projector. This module wraps the student's loss
*criterion* rather than the model: the training model's `criterion` becomes a DistillationLoss that
holds the frozen teacher. The criterion is not a module (the teacher's weights never enter the
student's parameters, state_dict or optimizer) and Ultralytics strips criteria before every save,
so last.pt / best.pt stay plain DetectionModels and the teacher is never written.

Per anchor, on every head branch (YOLO26/v10 have one-to-many and one-to-one):
- classes: binary KL between sigmoid(teacher / T) and sigmoid(student / T) per class (YOLO scores
  are independent sigmoids, not a softmax), summed over classes, averaged over anchors, times T²;
- boxes: KL between the softened DFL bin distributions of the four sides (L2 where reg_max is 1),
  averaged over anchors weighted by the teacher's top class probability, so background anchors,
  whose boxes mean nothing, do not dominate; times T².
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import EdgepruneError

LOSS_NAME = "kd_loss"


def _branches(preds) -> list[dict]:
    """The raw head dicts (boxes, scores) of train-mode output or the second element of eval-mode output."""
    preds = preds[1] if isinstance(preds, (tuple, list)) else preds
    if "one2many" in preds:
        return [preds["one2many"], preds["one2one"]]
    return [preds]


def class_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Binary KL(teacher || student) of (b, nc, anchors) logits, summed over classes, mean over anchors."""
    s, t = student / temperature, teacher / temperature
    p = torch.sigmoid(t)
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.sum(1).mean() * temperature**2


def box_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                     weight: torch.Tensor) -> torch.Tensor:
    """KL of the DFL distributions of (b, 4 * reg_max, anchors) outputs, weighted per anchor by (b, anchors)."""
    b, c, a = student.shape
    bins = c // 4
    if bins > 1:
        s = F.log_softmax(student.view(b, 4, bins, a) / temperature, dim=2)
        t = F.log_softmax(teacher.view(b, 4, bins, a) / temperature, dim=2)
        per_anchor = F.kl_div(s, t, log_target=True, reduction="none").sum(2).mean(1) * temperature**2
    else:  # no distribution to soften (reg_max 1): match the box offsets
        per_anchor = (student - teacher).pow(2).mean(1)
    return (per_anchor * weight).sum() / weight.sum().clamp_min(1e-6)


def head_distillation(student_preds, teacher_preds, temperature: float) -> torch.Tensor:
    """Class + box distillation between two Detect heads' raw outputs, averaged over head branches."""
    students, teachers = _branches(student_preds), _branches(teacher_preds)
    if len(students) != len(teachers):
        raise EdgepruneError("the teacher's head has other branches than the student's (one-to-one vs not)",
                             "distil from the unpruned model of the same family")
    total = 0.0
    for s, t in zip(students, teachers):
        if s["scores"].shape != t["scores"].shape or s["boxes"].shape != t["boxes"].shape:
            raise EdgepruneError(f"teacher head outputs {tuple(t['scores'].shape)}/{tuple(t['boxes'].shape)} do not "
                                 f"match the student's {tuple(s['scores'].shape)}/{tuple(s['boxes'].shape)}",
                                 "the teacher must be the unpruned model with the same classes and head")
        t_scores, t_boxes = t["scores"].detach().float(), t["boxes"].detach().float()
        confidence = torch.sigmoid(t_scores).amax(1)
        total = total + class_distillation(s["scores"].float(), t_scores, temperature)
        total = total + box_distillation(s["boxes"].float(), t_boxes, temperature, confidence)
    return total / len(students)


class DistillationLoss:
    """Ultralytics criterion protocol: (preds, batch) -> (loss vector x batch size, {name: detached item})."""

    def __init__(self, criterion, teacher: nn.Module, weight: float, temperature: float):
        self.criterion = criterion
        self.teacher = teacher
        self.weight = weight
        self.temperature = temperature

    def __call__(self, preds, batch: dict):
        loss, items = self.criterion(preds, batch)
        with torch.no_grad():
            teacher_preds = self.teacher(batch["img"])
        term = head_distillation(preds, teacher_preds, self.temperature)
        batch_size = batch["img"].shape[0]
        loss = torch.cat([loss.reshape(-1), (self.weight * term * batch_size).reshape(1).to(loss.dtype)])
        return loss, {**items, LOSS_NAME: term.detach()}

    def update(self) -> None:
        """Ultralytics calls this once per epoch (E2E losses decay their one-to-many weight)."""
        if hasattr(self.criterion, "update"):
            self.criterion.update()


def freeze(teacher: nn.Module, device) -> nn.Module:
    teacher = teacher.float().to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def attach(student: nn.Module, teacher: nn.Module, weight: float, temperature: float) -> DistillationLoss:
    """Make `student.criterion` distil from `teacher`; the teacher is frozen, in eval mode, on the student's device."""
    if weight <= 0 or temperature <= 0:
        raise EdgepruneError(f"distillation needs weight > 0 and temperature > 0 (got {weight}, {temperature})",
                             "set distill_weight and distill_temperature in the target profile or on the command line")
    device = next(student.parameters()).device
    base = getattr(student, "criterion", None) or student.init_criterion()
    if isinstance(base, DistillationLoss):
        base = base.criterion
    student.criterion = DistillationLoss(base, freeze(teacher, device), weight, temperature)
    return student.criterion
