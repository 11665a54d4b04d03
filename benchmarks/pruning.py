"""`make bench-prune`: what structured pruning buys on the host, measured side by side in one run.

For each family (random-initialised from its yaml: speed does not depend on the weights) and each
FLOPs-reduction goal this reports params, GFLOPs and ONNX Runtime CPU latency (p50, 2 threads,
batch 1) of the pruned model next to the unpruned one, as ratios.

`--accuracy CHECKPOINT` adds the slow half: the trained checkpoint is pruned to each goal at the
dataset's size, fine-tuned with the deploy recipe, and its mAP50-95 is reported next to the
unpruned checkpoint given the same epochs (the honest control: extra epochs help it too).

`--checkpoints BASE PRUNED...` times trained models instead of random-initialised ones (e.g. the recovery
benchmark's fine-tuned rows), in the same turns, as ratios to the first: what a trained allocation buys.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgeprune import formats
from edgeprune.errors import EdgepruneError
from edgeprune.evaluation.latency import measure_interleaved
from edgeprune.formats.onnx.export import export_fp32
from edgeprune.latency.features import PARTS, macs_by_part
from edgeprune.manifest import scratch_dir, tool_versions
from edgeprune.pruning.heads import halving
from edgeprune.pruning.iterative import iterative_prune
from edgeprune.budget.flops import prune_to_flops
from edgeprune.pruning.structured import ALLOCATIONS, PruneConfig, count_macs, prune

from benchmarks.report import publish

MODELS = ("yolo11n.yaml", "yolov8n.yaml", "yolo26n.yaml")
REDUCTIONS = (0.3, 0.5, 0.7)


def _artefact(model: torch.nn.Module, imgsz: int, folder: Path, runtime: str) -> Path:
    """ONNX Runtime: the FP32 ONNX; LiteRT: the full-INT8 .tflite the rpi target deploys (random calibration
    images: ranges do not change which kernels run, so latency does not depend on them)."""
    if runtime == "litert":
        calibration = np.random.default_rng(0).random((8, 3, imgsz, imgsz), dtype=np.float32)
        return formats.get("tflite").export(model, folder / f"m{time.monotonic_ns()}.tflite", imgsz, "int8",
                                            calibration, float_scope="decode")
    return export_fp32(model, imgsz, folder / f"m{time.monotonic_ns()}.onnx")


def time_in_turns(paths: dict, imgsz: int, threads: int, rounds: int, repeats: int) -> dict:
    """p50 per model and p50 ratio to the first model, per repeat; each repeat opens fresh ONNX Runtime
    sessions, so the spread also covers what differs between processes (thread placement, allocations)."""
    first = next(iter(paths))
    per_repeat = []
    for _ in range(repeats):
        runners = {key: formats.load_runner(path, threads=threads, imgsz=imgsz).run for key, path in paths.items()}
        per_repeat.append({key: r["p50_ms"] for key, r in measure_interleaved(runners, imgsz, rounds=rounds).items()})
        del runners
    out = {}
    for key in paths:
        ratios = [rep[key] / rep[first] for rep in per_repeat]
        out[key] = {"p50_ms": round(statistics.median(rep[key] for rep in per_repeat), 3),
                    "latency_ratio": round(statistics.median(ratios), 3),
                    "latency_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
                    "p50_ms_per_repeat": [rep[key] for rep in per_repeat]}
    return out


def _config(model: torch.nn.Module, imgsz: int, heads: bool, **kwargs) -> PruneConfig:
    """The benchmark's pruning; `heads`: every attention block also loses half its heads."""
    return PruneConfig(imgsz=imgsz, attention_heads=heads, overrides=halving(model) if heads else (), **kwargs)


def _heads_dropped(result) -> int:
    return 0 if result is None else sum(e["heads"] - len(e["kept"]) for e in result.heads.values())


def run(models=MODELS, reductions=REDUCTIONS, imgsz: int = 640, threads: int = 2, nc: int = 80,
        rounds: int = 8, repeats: int = 1, runtime: str = "onnxruntime", heads: bool = False,
        allocations=("uniform",)) -> dict:
    """Per family: prune to every goal first, then time the unpruned and pruned models in turns. `heads`: each goal
    is also pruned with half of every attention block's heads dropped, timed in the same turns; each goal is cut
    once per entry of `allocations` (PruneConfig.allocation), also timed in the same turns."""
    from edgeprune.models.checkpoint import build_from_yaml

    rows = []
    with scratch_dir("benchprune") as tmp:
        for spec in models:
            torch.manual_seed(0)
            model = build_from_yaml(spec, nc).eval()  # YOLO26: the NMS-free head it deploys
            macs0, params0 = count_macs(model, imgsz)
            parts0 = macs_by_part(model, imgsz)
            family = [{"model": spec, "flops_goal": 0.0, "heads_dropped": 0, "allocation": "", "params": params0,
                       "gflops": round(2 * macs0 / 1e9, 3), "flops_ratio": 1.0, "locked": 0,
                       "macs_kept": macs_kept(parts0, parts0)}]
            paths = {0: _artefact(model, imgsz, Path(tmp), runtime)}
            for goal, halve, how in [(g, h, a) for g in reductions for h in ((False, True) if heads else (False,))
                                     for a in allocations]:
                start = time.time()
                pruned, result = prune_to_flops(model, _config(model, imgsz, halve, flops_reduction=goal,
                                                                allocation=how))
                family.append({"model": spec, "flops_goal": goal, "heads_dropped": _heads_dropped(result),
                               "allocation": how, "params": result.params_after,
                               "gflops": round(2 * result.macs_after / 1e9, 3),
                               "flops_ratio": round(result.macs_after / macs0, 3), "locked": len(result.locked),
                               "macs_kept": macs_kept(macs_by_part(pruned, imgsz), parts0),
                               "prune_s": round(time.time() - start, 1)})
                paths[len(family) - 1] = _artefact(pruned, imgsz, Path(tmp), runtime)
            latency = time_in_turns(paths, imgsz, threads, rounds, repeats)
            for i, row in enumerate(family):
                row.update(latency[i])
                print(row, flush=True)
            rows += family
    return {"imgsz": imgsz, "threads": threads, "nc": nc, "rounds": rounds, "repeats": repeats, "runtime": runtime,
            "timing": "interleaved", "rows": rows, "tools": tool_versions()}


def timed_checkpoints(checkpoints, imgsz: int = 640, threads: int = 2, rounds: int = 8, repeats: int = 1,
                      runtime: str = "onnxruntime") -> dict:
    """Trained checkpoints (`LABEL=PATH` or a path) timed in turns, each as a ratio to the first."""
    from edgeprune.models.checkpoint import load_model

    labelled = [c.split("=", 1) if "=" in c else (Path(c).stem, c) for c in checkpoints]
    rows, paths, parts = [], {}, []
    with scratch_dir("benchprune") as tmp:
        for label, path in labelled:
            model = load_model(Path(path)).float().eval()
            macs, params = count_macs(model, imgsz)
            parts.append(macs_by_part(model, imgsz))
            rows.append({"model": label, "checkpoint": str(path), "allocation": "as trained", "params": params,
                         "gflops": round(2 * macs / 1e9, 3)})
            paths[len(rows) - 1] = _artefact(model, imgsz, Path(tmp), runtime)
        latency = time_in_turns(paths, imgsz, threads, rounds, repeats)
    for i, row in enumerate(rows):
        row["flops_ratio"] = round(row["gflops"] / rows[0]["gflops"], 3)
        row["flops_goal"] = round(1 - row["flops_ratio"], 3)
        row["macs_kept"] = macs_kept(parts[i], parts[0])
        row.update(latency[i])
        print(row, flush=True)
    return {"imgsz": imgsz, "threads": threads, "rounds": rounds, "repeats": repeats, "runtime": runtime,
            "timing": "interleaved", "rows": rows, "tools": tool_versions()}


def accuracy(checkpoint: Path, data: str, reductions, epochs: int, imgsz: int, work: Path,
             distill_weight: float = 0.0, steps=(1,), criterion: str = "l2", heads: bool = False) -> list[dict]:
    """mAP50-95 after `epochs` of fine-tuning at each FLOPs goal, and of the unpruned model (goal 0).

    With `distill_weight` > 0 every pruned goal is fine-tuned twice, without and with distillation from
    the unpruned checkpoint, so the two rows differ only in the teacher. Each entry of `steps` is a
    schedule: with n > 1 cuts the same total epochs are split between them (epochs // n between cuts,
    the rest after the last), so the control's epoch count still matches. With `heads`, every attention block
    of a pruned goal also loses half its heads (the FLOPs search then cuts channels around that).
    """
    from edgeprune.data.batches import loss_batches
    from edgeprune.data.build import ensure_dataset
    from edgeprune.evaluation.detection import evaluate_model
    from edgeprune.pruning.structured import DATA_CRITERIA
    from edgeprune.training.trainer import finetune_recipe, train
    from edgeprune.models.checkpoint import load_model

    if any(n < 1 or (n > 1 and epochs // n < 1) for n in steps):
        raise EdgepruneError(f"{epochs} epochs cannot be split over {max(steps)} pruning steps",
                             "give steps >= 1 and at least as many --epochs")
    dataset = ensure_dataset(data)
    base = load_model(checkpoint)
    start_map = evaluate_model(base, dataset, imgsz, desc="eval checkpoint")["map50_95"]
    weights = (0.0, distill_weight) if distill_weight else (0.0,)
    config = _config(base, imgsz, heads, criterion=criterion)

    def batches():  # a data criterion scores each cut with detection-loss gradients on train images
        return loss_batches(dataset, imgsz) if criterion in DATA_CRITERIA else None

    rows = []
    for goal, cuts, kd in [(0.0, 0, 0.0)] + [(g, n, kd) for g in reductions for n in steps for kd in weights]:
        between = epochs // cuts if cuts > 1 else 0
        name = f"goal{int(goal * 100)}" + (f"-steps{cuts}" if cuts > 1 else "") + (f"-kd{kd:g}" if kd else "")

        def tune(model, epochs_now, folder, kd=kd):
            cfg = finetune_recipe(epochs_now, imgsz, distill_weight=kd)
            return train(model, dataset, cfg, folder, teacher=load_model(checkpoint) if kd else None)

        if goal == 0:  # train() updates its module in place: the control trains a fresh copy, not `base`
            model, result = load_model(checkpoint), None
        elif cuts == 1:
            model, result = prune(base, replace(config, flops_reduction=goal), batches=batches())
        else:
            model, result, _ = iterative_prune(base, replace(config, flops_reduction=goal), cuts,
                                               lambda m, step: tune(m, between, work / name / f"step{step}"),
                                               batches=batches)
        before = start_map if goal == 0 else evaluate_model(model, dataset, imgsz, desc=f"eval {name}")["map50_95"]
        tuned = tune(model, epochs - between * max(0, cuts - 1), work / name)
        after = evaluate_model(tuned, dataset, imgsz, desc=f"eval tuned {name}")["map50_95"]
        rows.append({"checkpoint": str(checkpoint), "flops_goal": goal, "epochs": epochs, "imgsz": imgsz,
                     "criterion": None if goal == 0 else criterion,
                     "heads_dropped": _heads_dropped(result),
                     "distill_weight": kd, "prune_steps": cuts,
                     "flops_removed": 0.0 if result is None else round(result.flops_reduction, 3),
                     "map50_95_before_finetune": round(before, 4), "map50_95_after_finetune": round(after, 4)})
        print(rows[-1], flush=True)
    control = rows[0]["map50_95_after_finetune"]
    for row in rows:
        row["delta_vs_unpruned_same_epochs"] = round(row["map50_95_after_finetune"] - control, 4)
    return rows


def macs_kept(parts: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    """Each part's MACs (backbone, neck, head) as a fraction of the reference model's."""
    return {part: round(parts[part] / reference[part], 3) for part in PARTS}


def _parts(row: dict) -> str:
    kept = row.get("macs_kept")  # rows older than the column: "—"
    return " / ".join(f"{kept[p]:.0%}" for p in PARTS) if kept else "—"


def _recipe(row: dict) -> str:
    parts = [row["criterion"]] if row.get("criterion") not in (None, "l2") else []
    parts += [f"{row['prune_steps']} cuts"] if row.get("prune_steps", 1) > 1 else []
    parts += [f"{row['heads_dropped']} attention heads dropped"] if row.get("heads_dropped") else []
    parts += [f"distil {row['distill_weight']:g}"] if row.get("distill_weight") else []
    return " + ".join(parts) or "—"


def _allocation(row: dict) -> str:
    """How the goal's widths were chosen: "—" for the unpruned family row (""); rows older than the option: uniform."""
    return row.get("allocation", "uniform") or "—"


def markdown(result: dict) -> str:
    runtime = {"litert": "LiteRT full-INT8 .tflite"}.get(result.get("runtime"), "ONNX Runtime FP32")
    title = f"# Pruning benchmark — {result['imgsz']} px, {runtime} on the CPU, {result['threads']} threads, batch 1"
    lines = [title, "",
             "| model | FLOPs goal | allocation | heads dropped | params (M) | GFLOPs | FLOPs ratio | "
             "MACs kept: backbone / neck / head | p50 ms | latency ratio | ratio range |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        low, high = r.get("latency_ratio_range", [r["latency_ratio"]] * 2)
        lines.append(f"| {r['model']} | {r['flops_goal']:.0%} | {_allocation(r)} | "
                     f"{r.get('heads_dropped', 0)} | {r['params'] / 1e6:.2f} | "
                     f"{r['gflops']:.2f} | "
                     f"{r['flops_ratio']:.2f} | {_parts(r)} | {r['p50_ms']:.1f} | {r['latency_ratio']:.3f} | "
                     f"{low:.3f}–{high:.3f} |")
    lines += ["", "Ratios are pruned / unpruned, measured in the same run on the same machine; the models of a "
              "family are timed in turns (2 warm-up + 5 timed runs each, round after round), so a slow spell hits "
              f"all alike. {result.get('repeats', 1)} repeat(s), each with fresh ONNX Runtime sessions: the "
              "latency ratio is the median of the repeats' ratios, the range their min–max.", ""]
    if result.get("accuracy"):
        rows = result["accuracy"]
        lines += [f"## mAP50-95 after fine-tuning ({rows[0]['imgsz']} px, bundled dataset, deploy recipe)", "",
                  "| checkpoint | FLOPs goal | FLOPs removed | epochs | recipe | before fine-tuning | "
                  "after fine-tuning | vs unpruned + same epochs |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {Path(r['checkpoint']).name} | {r['flops_goal']:.0%} | {r['flops_removed']:.0%} | "
                         f"{r['epochs']} | {_recipe(r)} | {r['map50_95_before_finetune']:.3f} | "
                         f"{r['map50_95_after_finetune']:.3f} | "
                         f"{r['delta_vs_unpruned_same_epochs'] * 100:+.1f} pts |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (fresh sessions each) for the spread")
    parser.add_argument("--runtime", choices=("onnxruntime", "litert"), default="onnxruntime",
                        help="onnxruntime: FP32 ONNX; litert: the rpi target's full-INT8 .tflite")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--goals", nargs="*", type=float, default=list(REDUCTIONS), help="FLOPs-reduction goals")
    parser.add_argument("--accuracy", metavar="CHECKPOINT", help="also fine-tune this trained checkpoint pruned to "
                        "each goal and report mAP50-95 (slow: one fine-tuning per goal plus the unpruned control)")
    parser.add_argument("--data", default="datasets/synth.yaml")
    parser.add_argument("--epochs", type=int, default=12, help="fine-tuning epochs with --accuracy")
    parser.add_argument("--accuracy-imgsz", type=int, default=256)
    parser.add_argument("--distill-weight", type=float, default=0.0, help="with --accuracy: also fine-tune every "
                        "pruned goal with distillation from the unpruned checkpoint at this weight")
    parser.add_argument("--steps", type=int, nargs="*", default=[1], help="with --accuracy: schedules to compare, "
                        "each reaching every goal in that many cuts with the --epochs split between them")
    parser.add_argument("--criterion", default="l2", help="with --accuracy: the pruning criterion (taylor: the "
                        "profiles' default, scored on train images)")
    parser.add_argument("--heads", action="store_true", help="pruned goals also drop half the heads of every "
                        "attention block (latency: as extra rows beside the channel-only ones; --accuracy: instead)")
    parser.add_argument("--allocations", nargs="*", default=["uniform"], choices=ALLOCATIONS,
                        help="how each FLOPs goal spreads over layers; several: each is cut and timed in the same "
                        "turns")
    parser.add_argument("--skip-latency", action="store_true", help="only the --accuracy part")
    parser.add_argument("--checkpoints", nargs="*", metavar="[LABEL=]CKPT", help="time these trained checkpoints "
                        "instead of the families' random-initialised prunings, as ratios to the first")
    parser.add_argument("--accuracy-from", nargs="*", default=[], metavar="JSON",
                        help="add the accuracy rows of earlier runs (their prune.json), e.g. other checkpoints")
    parser.add_argument("--out", default="bench")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    result = ({"imgsz": args.imgsz, "threads": args.threads, "rows": [], "tools": tool_versions()} if args.skip_latency
              else timed_checkpoints(args.checkpoints, args.imgsz, args.threads, repeats=args.repeats,
                                     runtime=args.runtime) if args.checkpoints
              else run(args.models, tuple(args.goals), args.imgsz, args.threads, repeats=args.repeats,
                       runtime=args.runtime, heads=args.heads, allocations=tuple(args.allocations)))
    if args.accuracy:
        result["accuracy"] = accuracy(Path(args.accuracy), args.data, tuple(args.goals), args.epochs,
                                      args.accuracy_imgsz, (out / "prune-accuracy").resolve(),
                                      distill_weight=args.distill_weight, steps=tuple(args.steps),
                                      criterion=args.criterion, heads=args.heads)
    for earlier in args.accuracy_from:
        result.setdefault("accuracy", []).extend(json.loads(Path(earlier).read_text()).get("accuracy", []))
    publish(out, "prune", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
