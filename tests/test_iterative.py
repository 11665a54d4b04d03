"""Iterative pruning: several cuts with fine-tuning between them, one composed record for replay."""

import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.pruning.iterative import compose_kept, iterative_prune
from edgeprune.pruning.replay import replay
from edgeprune.pruning.structured import PruneConfig
from test_replay import IMGSZ, _assert_identical, _model


def test_compose_kept_indexes_the_original_conv():
    assert compose_kept({"a": [0, 2, 4, 6], "b": [1, 3]}, {"a": [1, 3], "c": [0]}) == {"a": [2, 6], "b": [1, 3],
                                                                                       "c": [0]}


@pytest.mark.slow
def test_two_steps_reach_the_goal_fine_tune_between_and_replay_exactly():
    original = _model("yolo11n.yaml")
    calls = []

    def fine_tune(model, step):  # stands in for training: changes the weights the next step ranks
        calls.append(step)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + 0.01 * torch.randn_like(p))
        return model

    cfg = PruneConfig(flops_reduction=0.5, imgsz=IMGSZ)
    pruned, result, log = iterative_prune(original, cfg, 2, fine_tune)
    assert calls == [1], "fine-tuned between the cuts, not after the last (the finetune stage does that)"
    assert [s["step"] for s in log] == [1, 2] and log[0]["flops_reduction"] < log[1]["flops_reduction"]
    assert abs(result.flops_reduction - 0.5) <= cfg.tolerance + 0.01
    rebuilt = replay(original, result.replay_record())
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}


@pytest.mark.slow
def test_one_step_equals_one_shot_pruning():
    from edgeprune.pruning.structured import prune

    original = _model("yolo11n.yaml")
    cfg = PruneConfig(flops_reduction=0.4, imgsz=IMGSZ)
    once, _ = prune(original, cfg)
    stepped, result, _ = iterative_prune(original, cfg, 1, lambda m, k: pytest.fail("no fine-tuning after the last"))
    _assert_identical(once, stepped)
    _assert_identical(replay(original, result.replay_record()), stepped)


def test_zero_steps_is_an_error():
    with pytest.raises(EdgepruneError, match="prune steps"):
        iterative_prune(_model("yolo11n.yaml"), PruneConfig(imgsz=IMGSZ), 0, lambda m, k: m)
