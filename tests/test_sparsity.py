"""Sparsity-inducing training before the cut (an L1 penalty on BatchNorm scales) and the recovery benchmark."""

import json

import pytest
import torch

from edgeprune.data.batches import loss_batches
from edgeprune.data.dataset import load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.models.checkpoint import build_from_yaml, save_model
from edgeprune.training import sparsity

IMGSZ = 64


def test_the_penalty_adds_one_loss_term_whose_gradient_is_the_sign_of_every_bn_scale(tiny_data):
    from ultralytics.cfg import DEFAULT_CFG

    model = build_from_yaml("yolo11n.yaml", 6).train()
    model.args = DEFAULT_CFG  # the trainer sets the loss gains
    batch = loss_batches(load_dataset(tiny_data), IMGSZ, images=4, batch=4)[0]
    base = model.init_criterion()
    plain, _ = base(model(batch["img"]), batch)
    loss = sparsity.attach(model, 1e-3)
    penalised, items = loss(model(batch["img"]), batch)
    assert len(penalised) == len(plain) + 1 and sparsity.LOSS_NAME in items
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    expected = 1e-3 * sum(float(bn.weight.abs().sum()) for bn in norms) * batch["img"].shape[0]
    assert float(penalised[-1]) == pytest.approx(expected, rel=1e-5)
    model.zero_grad()
    penalised[-1].backward()
    bn = norms[3]
    assert torch.allclose(bn.weight.grad, 1e-3 * 4 * torch.sign(bn.weight.detach()))
    with pytest.raises(EdgepruneError):
        sparsity.attach(model, 0.0)


@pytest.mark.slow
def test_recovery_rows_train_equal_epochs_and_resume(tiny_data, tmp_path):
    from benchmarks import recovery

    checkpoint = save_model(build_from_yaml("yolo11n.yaml", 6), tmp_path / "base.pt")
    dataset = load_dataset(tiny_data)
    rows = {r.name: r for r in recovery.RECIPES}
    sparse = recovery.run_recipe(rows["sparsity"], checkpoint, dataset, 0.5, 3, IMGSZ, tmp_path / "work")
    assert sparse["epochs"] == 3 and sparse["sparsity_epochs"] == 1 and sparse["flops_removed"] > 0.4
    control = recovery.run_recipe(rows["control"], checkpoint, dataset, 0.5, 3, IMGSZ, tmp_path / "work")
    assert control["flops_removed"] == 0 and control["map50_95_after_cut"] is None
    again = recovery.run_recipe(rows["sparsity"], checkpoint, dataset, 0.5, 3, IMGSZ, tmp_path / "work")
    assert again == sparse, "a finished row is read back, not trained again"
    text = recovery.markdown({"command": "x", "checkpoint": str(checkpoint), "goal": 0.5, "imgsz": IMGSZ,
                              "rows": [control, sparse]})
    assert "vs control" in text and json.dumps(sparse)


def test_recovery_rows_are_compared_with_the_control_of_their_own_schedule():
    from benchmarks import recovery

    def row(name, lr0, pruned_map, flops=0.5, gains=None):
        held = {} if gains is None else {"end2end_gains": gains}  # rows from before the gains were recorded: none
        return {"recipe": name, "what": name, "epochs": 12, "lr0": lr0, "sparsity_epochs": 0, "flops_removed": flops,
                "map50_95_after_cut": 0.1 if flops else None, "map50_95": pruned_map, **held}

    rows = [row("control", 0.01, 0.50, 0), row("control-small-lr", 0.001, 0.60, 0),
            row("control-held-gains", 0.01, 0.55, 0, [1.0, 1.0]),
            row("taylor", 0.01, 0.45, gains=[]), row("taylor-small-lr", 0.001, 0.58),
            row("taylor-knapsack-held-gains", 0.01, 0.54, gains=[1.0, 1.0])]
    text = recovery.markdown({"command": "x", "checkpoint": "c.pt", "goal": 0.5, "imgsz": 64, "rows": rows})
    assert "| taylor | 12 | 50% | 0.100 | 0.450 | -5.0 pts |" in text
    assert "| taylor-small-lr | 12 | 50% | 0.100 | 0.580 | -2.0 pts |" in text
    assert "| taylor-knapsack-held-gains | 12 | 50% | 0.100 | 0.540 | -1.0 pts |" in text


@pytest.mark.slow
def test_a_distilled_recovery_row_is_taught_by_the_unpruned_checkpoint(tiny_data, tmp_path):
    from benchmarks import recovery

    checkpoint = save_model(build_from_yaml("yolo11n.yaml", 6), tmp_path / "base.pt")
    recipe = recovery.BY_NAME["taylor-kd"]
    row = recovery.run_recipe(recipe, checkpoint, load_dataset(tiny_data), 0.5, 1, IMGSZ, tmp_path / "work")
    assert row["distill_weight"] == recipe.distill_weight > 0 and row["flops_removed"] > 0.4
    header = (tmp_path / "work" / "taylor-kd" / "finetune" / "ultralytics" / "results.csv").read_text().splitlines()[0]
    assert "kd_loss" in header, "the distillation term reaches the trainer's logged losses"


def test_a_recovery_row_trains_with_its_seed_and_refuses_a_cache_of_another(tiny_data, tmp_path, monkeypatch):
    from benchmarks import recovery

    checkpoint = tmp_path / "base.pt"
    save_model(build_from_yaml("yolo11n.yaml", 6), checkpoint)
    seeds = []
    monkeypatch.setattr(recovery, "train", lambda model, dataset, cfg, folder, **kw: seeds.append(cfg.seed) or model)
    row = recovery.run_recipe(recovery.BY_NAME["sparsity"], checkpoint, load_dataset(tiny_data), 0.5, 3, IMGSZ,
                              tmp_path / "work", seed=3)
    assert seeds == [3, 3] and row["seed"] == 3, "the sparsity phase and the fine-tuning both train with the seed"
    with pytest.raises(EdgepruneError, match="seed 3, not 0"):
        recovery.run_recipe(recovery.BY_NAME["sparsity"], checkpoint, load_dataset(tiny_data), 0.5, 3, IMGSZ,
                            tmp_path / "work")
