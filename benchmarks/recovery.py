"""`make bench-recovery`: what closes the accuracy gap between a pruned model and the unpruned one at equal epochs.

From one checkpoint, every row is cut to the same FLOPs goal and trained the same total epochs; the rows differ
in one recipe choice each, and the unpruned checkpoint given the same epochs is the control:
  - criterion: l2 magnitude (the old default) vs taylor (detection-loss gradients, the profiles' default now);
  - learning rate: the deploy recipe restarts at the training lr (0.01, learning-rate rewinding in spirit,
    Renda et al. 2020) vs the classic small fine-tuning lr (0.001);
  - sparsity before the cut: K of the epochs train the unpruned model with an L1 penalty on BatchNorm scales
    (Network Slimming), then the cut (criterion bn), then the rest;
  - longer fine-tuning: the default recipe, the knapsack and the control at 2x / 3x the epochs (the
    accuracy-vs-epochs curve);
  - an end-to-end head's loss gains held at 1 / 1 for the run instead of Ultralytics' 0.8 -> 0.1 decay of the
    one-to-many gain (TrainConfig.end2end_gains), for the knapsack row and its control;
  - allocation: taylor with one ratio per layer vs ranked across layers vs the budget's knapsack priced in MACs;
  - attention heads: taylor with half of every attention block's heads dropped too (the FLOPs search then
    cuts fewer channels for the same goal);
  - distillation: taylor fine-tuned with the unpruned checkpoint as teacher, on the head outputs (edgeprune's) or
    on the neck features (Ultralytics' `distill_model`); worth trying once the checkpoint is clearly better than
    what the pruned model reaches from labels alone.
mAP50-95: pycocotools on the bundled val split (PyTorch FP32). Rows are cached: an interrupted run resumes.

    python -m benchmarks.recovery --checkpoint baselines/yolo11n-synth.pt --out bench     # make bench-recovery
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import edgeprune.env  # noqa: F401  (offline Ultralytics before models are built)
from edgeprune.budget.flops import prune_to_flops
from edgeprune.data.batches import loss_batches
from edgeprune.data.build import ensure_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.evaluation.detection import evaluate_model
from edgeprune.manifest import atomic_write_json, atomic_write_text
from edgeprune.models.checkpoint import load_model, save_model
from edgeprune.pruning.heads import halving
from edgeprune.pruning.structured import DATA_CRITERIA, PruneConfig
from edgeprune.training.trainer import finetune_recipe, train


@dataclass(frozen=True)
class Recipe:
    name: str
    what: str
    criterion: str = "l2"
    lr0: float = 0.01
    sparsity_epochs: int = 0  # of the total epochs, trained before the cut with the BN-scale L1 penalty
    epochs_factor: int = 1  # x the base epochs (the longer-curve rows)
    pruned: bool = True
    heads: bool = False  # also drop half of every attention block's heads
    global_ranking: bool = False  # rank channels across layers (scores over each layer's mean) instead of one ratio
    allocation: str = "uniform"  # knapsack: widths from the budget's knapsack priced in MACs (PruneConfig.allocation)
    distill_weight: float = 0.0  # > 0: the unpruned checkpoint teaches the head outputs at this weight (T 2)
    distill_features: float = 0.0  # > 0: Ultralytics' feature distillation from it at this weight
    end2end_gains: tuple = ()  # an end-to-end head's loss gains held for the run (TrainConfig.end2end_gains)


HELD = (1.0, 1.0)  # one-to-many, one-to-one: both branches at the recipe's learning rate
RECIPES = (
    Recipe("control", "unpruned, same epochs", pruned=False),
    Recipe("l2", "l2 magnitude, lr 0.01 (the old default)"),
    Recipe("taylor", "taylor (loss gradients)", criterion="taylor"),
    Recipe("small-lr", "l2, fine-tuning lr 0.001", lr0=0.001),
    Recipe("control-small-lr", "unpruned, fine-tuning lr 0.001", pruned=False, lr0=0.001),
    Recipe("taylor-small-lr", "taylor, fine-tuning lr 0.001", criterion="taylor", lr0=0.001),
    Recipe("sparsity", "BN-scale L1 for 1/3 of the epochs, cut by BN scale, then fine-tune", criterion="bn",
           sparsity_epochs=-1),
    Recipe("control-2x", "unpruned, 2x epochs", pruned=False, epochs_factor=2),
    Recipe("taylor-2x", "taylor, 2x epochs", criterion="taylor", epochs_factor=2),
    Recipe("control-3x", "unpruned, 3x epochs", pruned=False, epochs_factor=3),
    Recipe("taylor-3x", "taylor, 3x epochs", criterion="taylor", epochs_factor=3),
    Recipe("taylor-heads", "taylor + half of every attention block's heads", criterion="taylor", heads=True),
    Recipe("taylor-global", "taylor, ranked across layers (robust layers give up more)", criterion="taylor",
           global_ranking=True),
    Recipe("taylor-knapsack", "taylor, widths by the knapsack: least importance per MAC saved", criterion="taylor",
           allocation="knapsack"),
    Recipe("taylor-knapsack-2x", "taylor, knapsack widths, 2x epochs", criterion="taylor", allocation="knapsack",
           epochs_factor=2),
    Recipe("control-held-gains", "unpruned, end-to-end loss gains held at 1 / 1", pruned=False,
           end2end_gains=HELD),
    Recipe("taylor-knapsack-held-gains", "taylor, knapsack widths, end-to-end loss gains held at 1 / 1",
           criterion="taylor", allocation="knapsack", end2end_gains=HELD),
    Recipe("taylor-knapsack-3x", "taylor, knapsack widths, 3x epochs", criterion="taylor", allocation="knapsack",
           epochs_factor=3),
    Recipe("taylor-kd", "taylor + distillation from the checkpoint (weight 1)", criterion="taylor", distill_weight=1.0),
    Recipe("taylor-kd4", "taylor + distillation from the checkpoint (weight 4)", criterion="taylor", distill_weight=4.0),
    Recipe("taylor-kd-2x", "taylor + distillation (weight 1), 2x epochs", criterion="taylor", distill_weight=1.0,
           epochs_factor=2),
    Recipe("taylor-fd", "taylor + Ultralytics' feature distillation (dis 6)", criterion="taylor",
           distill_features=6.0),
    Recipe("taylor-fd-2x", "taylor + feature distillation (dis 6), 2x epochs", criterion="taylor",
           distill_features=6.0, epochs_factor=2),
)
BY_NAME = {r.name: r for r in RECIPES}
SPARSITY_WEIGHT = 1e-4  # Network Slimming's lambda for a loss averaged per image


def run_recipe(recipe: Recipe, checkpoint: Path, dataset, goal: float, epochs: int, imgsz: int, work: Path,
               seed: int = 0) -> dict:
    """One row, cached in work/<recipe>/row.json. `seed`: the training seed (the cut, scored on a fixed sample of
    train images, is the same for every seed): a second seed says how much of a row's difference is noise."""
    folder = work / recipe.name
    done = folder / "row.json"
    if done.exists():
        row = json.loads(done.read_text())
        if row.get("seed", 0) != seed:
            raise EdgepruneError(f"{done} was trained with seed {row.get('seed', 0)}, not {seed}",
                                 "give each seed its own --out")
        return row
    start = time.time()
    total = epochs * recipe.epochs_factor
    model = load_model(checkpoint)
    sparse = total // 3 if recipe.sparsity_epochs < 0 else recipe.sparsity_epochs
    if sparse:
        model = train(model, dataset, finetune_recipe(sparse, imgsz, sparsity=SPARSITY_WEIGHT, seed=seed),
                      folder / "sparsity")
    flops_removed, before = 0.0, None
    if recipe.pruned:
        batches = loss_batches(dataset, imgsz) if recipe.criterion in DATA_CRITERIA else None
        cfg = PruneConfig(flops_reduction=goal, criterion=recipe.criterion, imgsz=imgsz, attention_heads=recipe.heads,
                          overrides=halving(model) if recipe.heads else (), global_ranking=recipe.global_ranking,
                          allocation=recipe.allocation)
        model, result = prune_to_flops(model, cfg, batches=batches)
        flops_removed = result.flops_reduction
        before = evaluate_model(model, dataset, imgsz, desc=f"{recipe.name} cut")["map50_95"]
    cfg = finetune_recipe(total - sparse, imgsz, lr0=recipe.lr0, distill_weight=recipe.distill_weight,
                          distill_features=recipe.distill_features, seed=seed,
                          end2end_gains=recipe.end2end_gains)
    tuned = train(model, dataset, cfg, folder / "finetune", teacher=load_model(checkpoint) if cfg.distills else None)
    save_model(tuned, folder / "model.pt")
    after = evaluate_model(tuned, dataset, imgsz, desc=f"{recipe.name} tuned")["map50_95"]
    row = {"recipe": recipe.name, "what": recipe.what, "epochs": total, "lr0": recipe.lr0, "sparsity_epochs": sparse,
           "distill_weight": recipe.distill_weight, "distill_features": recipe.distill_features,
           "end2end_gains": list(recipe.end2end_gains), "flops_removed": round(flops_removed, 4),
           "map50_95_after_cut": None if before is None else round(before, 4),
           "map50_95": round(after, 4), "seed": seed, "wall_s": round(time.time() - start, 1)}
    atomic_write_json(done, row)
    return row


def _schedule(row: dict) -> tuple:
    """A pruned row is compared with the control trained on the same schedule: epochs, fine-tuning lr and
    end-to-end gains (rows written before lr0 was recorded take it from their recipe; before the gains, Ultralytics')."""
    lr0 = row["lr0"] if "lr0" in row else BY_NAME[row["recipe"]].lr0
    return row["epochs"], lr0, tuple(row.get("end2end_gains", ()))


def markdown(result: dict) -> str:
    lines = [f"# Accuracy recovery at equal epochs — {Path(result['checkpoint']).name}, -{result['goal']:.0%} FLOPs, "
             f"{result['imgsz']} px", "", f"`{result['command']}`", "",
             "| recipe | epochs | FLOPs removed | mAP50-95 after the cut | after training | vs control, same epochs |",
             "|---|---|---|---|---|---|"]
    controls = {_schedule(r): r["map50_95"] for r in result["rows"] if r["flops_removed"] == 0}
    for r in result["rows"]:
        control = controls.get(_schedule(r))
        delta = "" if control is None or r["flops_removed"] == 0 else f"{(r['map50_95'] - control) * 100:+.1f} pts"
        cut = "" if r["map50_95_after_cut"] is None else f"{r['map50_95_after_cut']:.3f}"
        lines.append(f"| {r['what']} | {r['epochs']} | {r['flops_removed']:.0%} | {cut} | {r['map50_95']:.3f} | {delta} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="baselines/yolo11n-synth.pt")
    parser.add_argument("--data", default="datasets/synth.yaml")
    parser.add_argument("--goal", type=float, default=0.5, help="FLOPs fraction every pruned row removes")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--recipes", default=",".join(r.name for r in RECIPES))
    parser.add_argument("--seed", type=int, default=0, help="training seed of every row (rows are cached per --out: "
                        "give each seed its own)")
    parser.add_argument("--out", default="bench")
    args = parser.parse_args(argv)
    out = Path(args.out)
    dataset = ensure_dataset(args.data)
    chosen = [r for r in RECIPES if r.name in args.recipes.split(",")]
    command = "python -m benchmarks.recovery " + " ".join(argv if argv is not None else sys.argv[1:])
    work = (out / "recovery" / Path(args.checkpoint).stem).resolve()
    result = {"command": command, "checkpoint": args.checkpoint, "goal": args.goal, "imgsz": args.imgsz,
              "seed": args.seed, "rows": []}
    for recipe in chosen:
        result["rows"].append(run_recipe(recipe, Path(args.checkpoint), dataset, args.goal, args.epochs, args.imgsz,
                                         work, args.seed))
        atomic_write_json(out / "recovery.json", result)
        atomic_write_text(out / "recovery.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
