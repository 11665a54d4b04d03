"""The honest control for a pruning result: the unpruned baseline given the same extra epochs.

A pruned model fine-tuned N epochs looks free next to an under-trained baseline; next to the
unpruned model trained the same N more epochs with the same recipe, it shows what pruning
really cost. Writes bench/control.json and bench/control.md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from edgeprune.data.build import BUNDLED_YAML, ensure_dataset
from edgeprune.paths import PROJECT_ROOT
from edgeprune.evaluation.detection import evaluate_model
from edgeprune.evaluation.model_stats import model_stats
from edgeprune.training.trainer import TrainConfig, train
from edgeprune.manifest import atomic_write_json, atomic_write_text
from edgeprune.models.checkpoint import load_model


def run(run_dir: Path, data: str, out: Path) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cfg = TrainConfig(**manifest["stages"]["finetune"]["config"])
    dataset = ensure_dataset(data)
    torch.set_num_threads(2)
    control = train(load_model(run_dir / "baseline" / "model.pt"), dataset, cfg, out / "control-train")
    rows = {"baseline": manifest["stages"]["baseline"]["metrics"],
            "pruned + fine-tuned": manifest["stages"]["finetune"]["metrics"],
            f"unpruned + {cfg.epochs} epochs (control)": {**evaluate_model(control, dataset, cfg.imgsz),
                                                         **model_stats(control, cfg.imgsz)}}
    result = {"train_config": asdict(cfg), "rows": {k: {m: v[m] for m in ("map50_95", "map50", "params", "gflops")}
                                                    for k, v in rows.items()}}
    atomic_write_json(out / "control.json", result)
    lines = ["# Pruning vs the same extra training", "", "| model | mAP50-95 | mAP50 | params (M) | GFLOPs |",
             "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['map50_95']:.3f} | {v['map50']:.3f} | {v['params'] / 1e6:.2f} | {v['gflops']:.2f} |"
              for k, v in result["rows"].items()]
    atomic_write_text(out / "control.md", "\n".join(lines + [""]))
    print("\n".join(lines))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", default=str(PROJECT_ROOT / "runs" / "rpi"))
    parser.add_argument("--data", default=str(BUNDLED_YAML))
    parser.add_argument("--out", default="bench")
    args = parser.parse_args(argv)
    run(Path(args.run_dir), args.data, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
