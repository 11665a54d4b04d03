"""Criteria, global vs uniform ranking and the FLOPs search (issue 3), on tiny models at 64 px."""

from copy import deepcopy

import pytest
import torch

from edgeprune.data.batches import loss_batches
from edgeprune.data.dataset import load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.models.blocks import unfuse_split_blocks
from edgeprune.pruning.structured import PruneConfig, count_macs, prune, prune_at_ratio
from edgeprune.pruning.taylor import accumulate_loss_gradients

IMGSZ = 64


def _model(cfg: str = "yolo11n.yaml", seed: int = 0):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    return DetectionModel(cfg, nc=6, verbose=False).eval()


@pytest.mark.parametrize("goal", [0.3, 0.7])
def test_flops_search_lands_within_tolerance(goal):
    """Channel rounding makes yolo11n's FLOPs jump 22 % -> 39 % in one step; the search must fill the step."""
    model = _model()
    cfg = PruneConfig(flops_reduction=goal, imgsz=IMGSZ)
    pruned, result = prune(model, cfg)
    macs0, _ = count_macs(model, IMGSZ)
    macs1, _ = count_macs(pruned, IMGSZ)
    assert abs((1 - macs1 / macs0) - goal) <= cfg.tolerance, f"goal {goal}, got {1 - macs1 / macs0:.3f}"
    assert result.macs_after == macs1


def test_global_and_uniform_both_hit_the_goal_with_different_widths():
    model = _model()
    results = {}
    for ranking in (False, True):
        cfg = PruneConfig(flops_reduction=0.5, imgsz=IMGSZ, global_ranking=ranking)
        pruned, result = prune(model, cfg)
        assert abs(result.flops_reduction - 0.5) <= cfg.tolerance
        widths = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d)}
        free = {n: w for n, w in widths.items() if n not in result.locked}
        assert all(w % 8 == 0 and w >= 8 for w in free.values()), "round_to and min_channels respected"
        for name, module in pruned.named_modules():  # split halves stay equal: the block's chunk still works
            if hasattr(module, "cv1") and hasattr(module, "c") and hasattr(module.cv1, "conv"):
                assert module.cv1.conv.out_channels in (2 * module.c, module.c), name
        x = torch.rand(1, 3, IMGSZ, IMGSZ)
        assert pruned(x)[0].shape == model(x)[0].shape
        results[ranking] = widths
    differing = [n for n in results[False] if results[False][n] != results[True][n]]
    assert len(differing) >= 5, "global ranking should distribute the cut unevenly across layers"


def test_global_ranking_keeps_override_ratios_fixed():
    cfg = PruneConfig(imgsz=IMGSZ, global_ranking=True, overrides=(("model.8.", 0.5),))
    model = _model()
    _, low = prune_at_ratio(model, 0.1, cfg)
    _, high = prune_at_ratio(model, 0.6, cfg)
    block8 = {n: w for n, w in low.layers.items() if n.startswith("model.8.")}
    assert block8, "the override prunes model.8"
    assert block8 == {n: w for n, w in high.layers.items() if n.startswith("model.8.")}, "override stays fixed"
    assert high.macs_after < low.macs_after


def test_taylor_needs_data():
    with pytest.raises(EdgepruneError, match="taylor needs data: pass --data"):
        prune(_model(), PruneConfig(flops_reduction=0.3, imgsz=IMGSZ, criterion="taylor"))
    with pytest.raises(EdgepruneError, match="unknown pruning criterion"):
        prune(_model(), PruneConfig(imgsz=IMGSZ, criterion="l3"))


def test_loss_batches_match_ultralytics_layout(tiny_data):
    batches = loss_batches(load_dataset(tiny_data), IMGSZ, images=6, batch=4)
    assert [len(b["img"]) for b in batches] == [4, 2]
    for b in batches:
        assert b["img"].shape[1:] == (3, IMGSZ, IMGSZ) and 0 <= float(b["img"].min()) <= float(b["img"].max()) <= 1
        n = len(b["cls"])
        assert n > 0 and b["cls"].shape == (n, 1) and b["bboxes"].shape == (n, 4) and b["batch_idx"].shape == (n,)
        assert float(b["bboxes"].min()) >= 0 and float(b["bboxes"].max()) <= 1


def test_taylor_gradients_reach_the_split_model_and_change_the_cut(tiny_data):
    batches = loss_batches(load_dataset(tiny_data), IMGSZ, images=8, batch=4)
    model = _model()
    work = deepcopy(model)
    unfuse_split_blocks(work)
    assert accumulate_loss_gradients(work, batches) == 8
    half = work.model[2].cv1a.conv.weight.grad  # a module that exists only in the split-block model
    assert half is not None and torch.isfinite(half).all() and half.abs().sum() > 0
    assert getattr(work, "criterion", None) is None, "no loss criterion left on the model"

    pruned, taylor = prune_at_ratio(model, 0.4, PruneConfig(imgsz=IMGSZ, criterion="taylor"), batches=batches)
    assert all(p.grad is None for p in pruned.parameters()), "no gradients ride along in the pruned model"
    assert all(p.grad is None for p in model.parameters()), "the caller's model is left untouched"
    _, l2 = prune_at_ratio(model, 0.4, PruneConfig(imgsz=IMGSZ, criterion="l2"))
    same_width = [n for n in taylor.kept if n in l2.kept and len(taylor.kept[n]) == len(l2.kept[n])]
    assert same_width and any(taylor.kept[n] != l2.kept[n] for n in same_width), "taylor picks other channels than l2"


def test_an_end_to_end_head_is_scored_by_the_gains_its_training_ends_on(tiny_data, monkeypatch):
    """YOLO26 deploys the one-to-one branch. Its head convs feed only the one-to-one loss, so their gradients
    scale exactly with that loss's gain: 1 - final_o2m (0.9) when scored, against a fresh criterion's 0.2."""
    from edgeprune.pruning import taylor

    batches = loss_batches(load_dataset(tiny_data), IMGSZ, images=4, batch=4)

    def head_gradient():
        model, made = _model("yolo26n.yaml"), []
        build = model.init_criterion
        model.init_criterion = lambda: made.append(build()) or made[0]
        taylor.accumulate_loss_gradients(model, batches)
        return model.model[-1].one2one_cv3[0][0][0].conv.weight.grad, made[0]

    scored, used = head_gradient()
    monkeypatch.setattr(taylor, "weigh_toward_deployment", lambda criterion: None)
    fresh, default = head_gradient()
    assert used.o2o == pytest.approx(1 - used.final_o2m) and used.o2o > 0.5 > default.o2o > 0
    assert scored.abs().sum() > 0
    torch.testing.assert_close(scored, fresh * (used.o2o / default.o2o), rtol=1e-3, atol=1e-9)
