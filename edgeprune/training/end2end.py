"""Hold an end-to-end head's two loss gains fixed for a whole run, instead of Ultralytics' decay.

YOLO26's loss weighs its one-to-many branch 0.8 at the start and `final_o2m` (0.1) by the last epoch, and the
one-to-one branch the rest. The one-to-one branch reads detached features, so the two gains scale disjoint sets
of parameters: under SGD they are per-branch learning-rate multipliers, and the decay leaves the backbone learning
at a tenth of the recipe's rate by the end of every run, a short fine-tuning included. Held at (1, 1), every part
trains at the recipe's rate, as the loss of a one-head model (YOLO11) does. Whether a pruned model's fine-tuning
gains from that is what bench-recovery's held-gains rows measure; it is off unless asked for.
"""

from __future__ import annotations

from torch import nn

from edgeprune.errors import EdgepruneError


def is_end_to_end(criterion) -> bool:
    """The loss has the two scheduled gains of Ultralytics' E2ELoss."""
    return all(hasattr(criterion, name) for name in ("o2m", "o2o", "o2m_copy", "final_o2m", "total"))


def check_gains(gains: tuple) -> tuple[float, float]:
    """(one-to-many, one-to-one) as floats, or one line saying what is wrong with them."""
    if len(gains) != 2 or float(gains[0]) < 0 or float(gains[1]) <= 0:
        raise EdgepruneError(f"end-to-end gains {tuple(gains)} must be two numbers, one-to-many >= 0 and "
                             "one-to-one > 0", "give the one-to-many and one-to-one gains, e.g. (1, 1): the deployed "
                             "one-to-one branch must keep learning")
    return float(gains[0]), float(gains[1])


def hold_gains(model: nn.Module, one2many: float, one2one: float):
    """Give `model.criterion` constant gains; returns it, or None for a model without an end-to-end loss.

    The gains are written into the loss's own schedule (start = end = `one2many`, total = the sum), so its
    per-epoch update keeps them. Ultralytics' resume builds a fresh loss before the trainer's callbacks run, and
    train() holds the gains again there.
    """
    one2many, one2one = check_gains((one2many, one2one))
    criterion = getattr(model, "criterion", None) or model.init_criterion()
    if not is_end_to_end(criterion):
        return None
    criterion.total = one2many + one2one
    criterion.o2m = criterion.o2m_copy = criterion.final_o2m = one2many
    criterion.o2o = one2one
    model.criterion = criterion
    return criterion
