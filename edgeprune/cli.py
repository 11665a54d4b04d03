"""`edgeprune` command line: deploy, the individual stages, data builders and the baseline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeprune.errors import EdgepruneError

DEFAULT_DATA = "datasets/synth.yaml"
TRUST_HELP = ("load the checkpoint as a full pickle, which runs any code inside it; only for files whose source you "
              "trust (default: weights-only loading with an allowlist of model classes)")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `edgeprune: error: … — fix: …` line, like every other bad input."""

    def error(self, message: str):
        print(f"edgeprune: error: {message} — fix: see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def _at_least(minimum: float, kind=int):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _fraction(text: str) -> float:
    value = _at_least(0.0, float)(text)
    if value >= 0.95:
        raise argparse.ArgumentTypeError(f"must be in [0, 0.95), got {value}")
    return value


def _image_size(text: str) -> int:
    value = _at_least(32)(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 (the detector's largest stride), got {value}")
    return value


POSITIVE, NON_NEGATIVE, POSITIVE_FLOAT = _at_least(1), _at_least(0), _at_least(1e-12, float)
PRUNE_CRITERIA = ("l1", "l2", "bn", "taylor", "random")  # = prune.structured.CRITERIA (kept literal: a light --help)
PRUNE_ALLOCATIONS = ("uniform", "knapsack")  # = prune.structured.ALLOCATIONS, likewise


def _input_model(spec: str, args, nc: int | None):
    """A checkpoint (loaded safely unless --trust-checkpoint) or a model yaml built with random weights, said so."""
    from edgeprune import api
    from edgeprune.models.checkpoint import is_model_yaml, model_nc

    model = api.load(spec, nc=nc, trust=args.trust_checkpoint)
    if is_model_yaml(spec):
        classes = (f"{nc} classes from --data" if nc else
                   f"the yaml's {model_nc(model)} classes; pass --data for the dataset's")
        print(f"note: {spec} is a model yaml: built with random weights ({classes}); accuracy needs trained weights")
    return model


def _cmd_data_synth(args) -> None:
    from edgeprune.data.build import build_synth

    yaml_path, digest = build_synth(Path(args.out), Path(args.yaml), train=args.train, val=args.val,
                                    imgsz=args.imgsz, seed=args.seed)
    print(f"synthetic dataset -> {yaml_path} (sha256 {digest[:12]})")


def _cmd_data_coco(args) -> None:
    from edgeprune.data.coco_subset import build_coco_subset

    yaml_path, summary = build_coco_subset(Path(args.coco_root), Path(args.out), Path(args.yaml),
                                           per_class=args.per_class, classes=args.classes,
                                           negatives=args.negatives, seed=args.seed)
    print(f"COCO subset -> {yaml_path}: {summary}")


def _cmd_data_video(args) -> None:
    from edgeprune.data.build import ensure_dataset
    from edgeprune.data.video import write_video

    out = write_video(ensure_dataset(args.data), Path(args.out), fps=args.fps, frames=args.frames)
    print(f"video -> {out}")


def _cmd_baseline(args) -> None:
    from edgeprune.data.build import ensure_dataset
    from edgeprune.training.baseline import train_baseline
    from edgeprune.training.trainer import TrainConfig

    dataset = ensure_dataset(args.data)
    cfg = TrainConfig(epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=args.seed, lr0=args.lr0,
                      close_mosaic=args.close_mosaic)
    out = Path(args.out)
    prov = train_baseline(args.model, dataset, cfg, out, Path(args.work_dir))
    print(f"baseline -> {out}: mAP50-95 {prov['metrics']['map50_95']:.3f}, mAP50 {prov['metrics']['map50']:.3f}, "
          f"trained in {prov['train_wall_s'] / 60:.1f} min")


def _cmd_deploy(args) -> None:
    from edgeprune import api

    result = api.deploy(args.target, model=args.model, data=args.data, out=args.out, run_dir=args.run_dir,
                        epochs=args.epochs, imgsz=args.imgsz, flops_reduction=args.flops_reduction,
                        calibration_images=args.calibration_images, eval_limit=args.eval_limit,
                        baseline_epochs=args.baseline_epochs, trust_checkpoint=args.trust_checkpoint,
                        latency_table=args.latency_table, latency_budget_ms=args.latency_budget_ms)
    print(result.summary())


def _cmd_validate(args) -> None:
    from edgeprune.bundle import add_device_results

    bundle = Path(args.bundle)
    if not (bundle / "metadata.json").exists():
        raise EdgepruneError(f"{bundle} is not an edgeprune bundle (no metadata.json)", "pass dist/<target>")
    from edgeprune.report import prediction_error

    results = add_device_results(bundle, Path(args.results))
    budget = results.get("budget", {})
    prediction = json.loads((bundle / "metadata.json").read_text()).get("latency_prediction")
    print(f"{bundle}: device p{budget.get('percentile')} {budget.get('measured_ms')} ms vs budget {budget.get('ms')} ms "
          f"-> {'PASS' if budget.get('pass') else 'FAIL'};{prediction_error(prediction, budget)} report updated"
          + (f" (prediction: {prediction['source']})" if prediction else ""))
    if not budget.get("pass"):
        raise SystemExit(1)


def _cmd_emulate(args) -> None:
    from edgeprune.data.build import ensure_dataset
    from edgeprune.emulate import emulate, summary
    from edgeprune.targets import load_target

    target = load_target(args.target)
    images = [Path(p) for p in args.images] if args.images else list(ensure_dataset(args.data).val_images[:args.count])
    bundle = Path(args.bundle or f"dist/{target.name}")
    out = Path(args.out or f"runs/emulate/{target.name}")
    report = emulate(bundle, target, images, out, qemu_cpu=args.qemu_cpu)
    print(summary(report))
    print(f"report: {out / 'report.json'}")
    if not report["pass"]:
        raise SystemExit(1)


def _cmd_prune(args) -> None:
    from edgeprune import api
    from edgeprune.manifest import atomic_write_json
    from edgeprune.models.checkpoint import check_classes, save_model
    from edgeprune.pruning.structured import PruneConfig

    overrides = tuple((k, float(v)) for k, v in (item.split("=") for item in args.override))
    cfg = PruneConfig(flops_reduction=args.flops, criterion=args.criterion, round_to=args.round_to, imgsz=args.imgsz,
                      overrides=overrides, global_ranking=args.global_ranking, attention_heads=args.heads,
                      allocation=args.allocation)
    dataset = api.load_dataset(args.data, check_images=False) if args.data else None  # taylor scores with it
    model = _input_model(args.model, args, dataset.nc if dataset else None)
    if dataset is not None:
        check_classes(model, dataset.names, args.model, args.data)
    pruned, result = api.prune(model, cfg, data=dataset, images=args.loss_images)
    out = Path(args.out)
    save_model(pruned, out, meta={"pruning": result.summary()})
    atomic_write_json(out.with_suffix(".prune.json"), {"summary": result.summary(),
                                                       "kept_channels": result.replay_record(),
                                                       "torch_pruning_history": result.history})
    print(f"pruned -> {out}: GFLOPs {2 * result.macs_before / 1e9:.3f} -> {2 * result.macs_after / 1e9:.3f} "
          f"({result.flops_reduction:.0%} fewer), params {result.params_before / 1e6:.2f}M -> {result.params_after / 1e6:.2f}M; "
          f"{len(result.locked)} layers locked (see {out.with_suffix('.prune.json')})")


def _cmd_finetune(args) -> None:
    from dataclasses import asdict

    from edgeprune import api
    from edgeprune.models.checkpoint import check_classes, param_count, save_model
    from edgeprune.training.trainer import finetune_recipe

    dataset = api.load_dataset(args.data)
    model = _input_model(args.model, args, dataset.nc)
    check_classes(model, dataset.names, args.model, args.data)
    teacher = None
    if args.teacher:
        teacher = api.load(args.teacher, trust=args.trust_checkpoint)
        check_classes(teacher, dataset.names, args.teacher, args.data)
    cfg = finetune_recipe(args.epochs, args.imgsz, batch=args.batch, lr0=args.lr0, seed=args.seed,
                          distill_weight=args.distill_weight if teacher is not None else 0.0,
                          distill_temperature=args.temperature,
                          distill_features=args.distill_features if teacher is not None else 0.0)
    out = Path(args.out)
    work_dir = Path(args.work_dir) if args.work_dir else out.parent / f"{out.stem}-train"
    before = api.evaluate(model, dataset, args.imgsz)["map50_95"]
    tuned = api.finetune(model, dataset, work_dir=work_dir, teacher=teacher, config=cfg,
                         trust=args.trust_checkpoint)
    save_model(tuned, out, meta={"finetune": asdict(cfg), "teacher": args.teacher})
    after = api.evaluate(tuned, dataset, args.imgsz)["map50_95"]
    print(f"fine-tuned -> {out}: mAP50-95 {before:.3f} -> {after:.3f}, params {param_count(tuned) / 1e6:.2f}M "
          f"(unchanged), {args.epochs} epochs" + (f", distilled from {args.teacher}" if teacher is not None else "")
          + f"; Ultralytics run in {work_dir}")


def _cmd_sensitivity(args) -> None:
    from edgeprune.data.build import ensure_dataset
    from edgeprune.manifest import atomic_write_json
    from edgeprune.models.checkpoint import load_model
    from edgeprune.pruning import sensitivity
    from edgeprune.pruning.structured import PruneConfig

    dataset = ensure_dataset(args.data)
    model = load_model(args.model, trust=args.trust_checkpoint)
    drops = sensitivity.scan(model, dataset, PruneConfig(imgsz=args.imgsz), args.ratio, args.limit)
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), {"ratio": args.ratio, "map50_95_drop": drops,
                                                 "suggested_overrides": sensitivity.suggest_overrides(drops, args.ratio)})
    sensitivity.plot(drops, out.with_suffix(".png"))
    print(f"sensitivity -> {out.with_suffix('.json')}, {out.with_suffix('.png')}")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(_image_size(part) for part in text.split(","))
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error} (in {text!r}; write e.g. 192,256,320)") from None


def _cmd_latency_probe(args) -> None:
    import subprocess

    from edgeprune import api
    from edgeprune.latency.probe import probe_size

    target = api.load_target(args.target, threads=args.threads)
    data = api.load_dataset(args.data) if target.recipe.precision == "int8" else None
    spec = args.model or _default_model(args)
    model = _input_model(spec, args, len(data.names) if data else None)
    out = api.probe_latency(model, target, args.out, args.sizes, args.variants, data, args.seed, source=spec)
    print(f"probe: {out} ({probe_size(out) / 1e6:.1f} MB); on the device: python3 probe_latency.py "
          f"--threads {target.validation.threads} --out {target.name}-latency.json")
    if args.run:
        table = Path(args.out) / "host-latency.json"
        subprocess.run([sys.executable, str(Path(out) / "probe_latency.py"), "--probe", str(out), "--out", str(table),
                        "--threads", str(target.validation.threads)], check=True)


def _default_model(args) -> str:
    from edgeprune.preflight import resolve_model

    return resolve_model(None, args.data)


def _cmd_latency_fit(args) -> None:
    from edgeprune import api

    model = api.fit_latency(args.table, holdout=args.holdout, seed=args.seed)
    out = Path(args.out or Path(args.table).with_name(Path(args.table).stem + "-model.json"))
    model.save(out)
    held = model.heldout
    if held:
        print(f"held-out ({held['count']} pruned variants the fit did not see): {held['within_10pct']:.0%} within "
              f"±10 % of measured p50, median |error| {held['median_abs_error']:.1%}, worst {held['max_abs_error']:.1%}")
    print(f"latency model ({model.source}) -> {out}")


def _cmd_latency_predict(args) -> None:
    from edgeprune import api

    target = api.load_target(args.target, threads=args.threads)
    latency_model = args.latency_model or (api.fit_latency(args.table) if args.table else None)
    model = _input_model(args.model, args, None)
    out = api.predict_latency(model, target, args.imgsz, latency_model)
    pct = f"p{target.budget.percentile}_ms"
    print(f"{target.name} at {out['imgsz']} px: p50 {out['p50_ms']} ms, {pct[:-3]} {out.get(pct, '?')} ms "
          f"(budget {target.budget.latency_ms} ms) — {out['source']}"
          f"{'; extrapolated beyond the probed sizes' if out['extrapolated'] else ''}")


def _cmd_budget(args) -> None:
    from edgeprune import api

    data = api.load_dataset(args.data)
    model = _input_model(args.model, args, data.nc)
    table = api.fit_latency(args.latency_table) if args.latency_table else None
    plan = api.plan_budget(model, args.target, data, args.budget, table, args.sizes)
    for c in plan.candidates:
        print(f"  {c.precision} {c.imgsz} px {'pruned' if c.pruned else 'unpruned'}: -{c.flops_reduction:.0%} FLOPs, "
              f"predicted {c.predicted_ms:.2f} ms, proxy mAP50-95 {c.proxy_map:.3f}")
    for note in plan.notes:
        print(f"  note: {note}")
    print(f"chosen: {plan.reason()}")


def _cmd_export_list(args) -> None:
    from edgeprune import formats

    for fmt in formats.all_formats():
        print(formats.describe(fmt))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="edgeprune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("deploy", help="prune -> fine-tune -> INT8 -> export -> validate -> bundle for a target")
    p.add_argument("--target", required=True, help="profile name in targets/ (rpi, ...) or a yaml path")
    p.add_argument("--model", default=None, help="checkpoint .pt, model yaml, or a shipped baseline by name (yolo11n, "
                   "yolo26n); default: the project's baseline")
    p.add_argument("--data", default=DEFAULT_DATA, help="dataset yaml (Ultralytics format)")
    p.add_argument("--out", default="dist", help="bundles go to OUT/<target>/")
    p.add_argument("--run-dir", default=None, help="working folder (default runs/<target>)")
    p.add_argument("--epochs", type=NON_NEGATIVE, default=None, help="fine-tuning epochs (default: the profile's)")
    p.add_argument("--imgsz", type=_image_size, default=None,
                   help="fix the input size (default: chosen by the budget among the profile's candidates, at most "
                        "the model's training size)")
    p.add_argument("--budget", type=POSITIVE_FLOAT, default=None, dest="latency_budget_ms",
                   help="latency budget in ms at the profile's percentile (default: the profile's budget.latency_ms)")
    p.add_argument("--flops", "--flops-reduction", type=_fraction, default=None, dest="flops_reduction",
                   help="prune to this fraction of FLOPs removed instead of to the latency budget")
    p.add_argument("--calibration-images", type=POSITIVE, default=None)
    p.add_argument("--eval-limit", type=POSITIVE, default=None, help="evaluate on the first N val images only")
    p.add_argument("--baseline-epochs", type=POSITIVE, default=60, help="epochs to train MODEL first when it is a yaml")
    p.add_argument("--latency-table", default=None,
                   help="the device's probe table (probe_latency.py): latency predictions from it, not the roofline")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=_cmd_deploy)

    p = sub.add_parser("baseline", help="train the project's baseline from a yaml and record its provenance")
    p.add_argument("--model", default="yolo11n.yaml")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--epochs", type=POSITIVE, default=60)
    p.add_argument("--imgsz", type=_image_size, default=256)
    p.add_argument("--batch", type=POSITIVE, default=16)
    p.add_argument("--lr0", type=POSITIVE_FLOAT, default=0.01)
    p.add_argument("--close-mosaic", type=NON_NEGATIVE, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="baselines/yolo11n-synth.pt")
    p.add_argument("--work-dir", default="runs/baseline")
    p.set_defaults(func=_cmd_baseline)

    data = sub.add_parser("data", help="build datasets").add_subparsers(
        dest="data_command", required=True, parser_class=OneLineParser)
    p = data.add_parser("synth", help="deterministic synthetic shapes dataset")
    p.add_argument("--out", default="datasets/synth")
    p.add_argument("--yaml", default="datasets/synth.yaml")
    p.add_argument("--train", type=POSITIVE, default=640)
    p.add_argument("--val", type=POSITIVE, default=160)
    p.add_argument("--imgsz", type=_image_size, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_data_synth)
    p = data.add_parser("video", help="an MJPG video of the val images, for stream benchmarks")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--out", default="bench/val.avi")
    p.add_argument("--fps", type=POSITIVE_FLOAT, default=30.0)
    p.add_argument("--frames", type=POSITIVE, default=150)
    p.set_defaults(func=_cmd_data_video)
    p = data.add_parser("coco-subset", help="class-balanced subset of an official COCO layout")
    p.add_argument("--coco-root", required=True, help="folder with annotations/ and train2017/ val2017/")
    p.add_argument("--out", default="datasets/coco-subset")
    p.add_argument("--yaml", default="datasets/coco-subset.yaml")
    p.add_argument("--per-class", type=POSITIVE, default=50, help="images per class and split (train)")
    p.add_argument("--classes", nargs="*", default=None, help="COCO class names to keep (default: all 80)")
    p.add_argument("--negatives", type=float, default=0.05, help="fraction of images without objects")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_data_coco)

    p = sub.add_parser("prune", help="structured channel pruning of a checkpoint to a FLOPs goal")
    p.add_argument("--model", required=True, help="checkpoint .pt, or a model yaml (random weights: for architecture "
                                                  "studies; importance of random weights means little)")
    p.add_argument("--flops", type=_fraction, default=0.5, help="fraction of FLOPs to remove")
    p.add_argument("--criterion", default="l2", choices=PRUNE_CRITERIA,
                   help="channel importance; taylor uses detection-loss gradients and needs --data")
    p.add_argument("--global", dest="global_ranking", action="store_true",
                   help="rank channels across all layers (importance normalised per layer) instead of one ratio each")
    p.add_argument("--heads", action="store_true",
                   help="also drop whole attention heads (C2PSA/PSA); the pruned .pt then needs edgeprune to load")
    p.add_argument("--allocation", default="uniform", choices=PRUNE_ALLOCATIONS,
                   help="uniform: one ratio per layer; knapsack: the channels with the least importance per MAC saved "
                        "go first (use with --criterion taylor, whose scores compare across layers)")
    p.add_argument("--data", default=None, help="dataset yaml whose train images score channels (taylor)")
    p.add_argument("--loss-images", type=POSITIVE, default=64, help="train images used for taylor gradients")
    p.add_argument("--round-to", type=POSITIVE, default=8)
    p.add_argument("--imgsz", type=_image_size, default=256)
    p.add_argument("--override", nargs="*", default=[], help="per-layer ratios, e.g. model.9.=0.2 model.22.=0.6")
    p.add_argument("--out", required=True)
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("finetune", help="fine-tune a (pruned) checkpoint keeping its architecture; can distil")
    p.add_argument("--model", required=True,
                   help="checkpoint .pt (e.g. from `edgeprune prune`) or a model yaml (random weights: trains from scratch)")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--epochs", type=NON_NEGATIVE, default=10)
    p.add_argument("--imgsz", type=_image_size, default=256)
    p.add_argument("--batch", type=POSITIVE, default=16)
    p.add_argument("--lr0", type=POSITIVE_FLOAT, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", default=None, help="unpruned checkpoint to distil from (frozen, never saved)")
    p.add_argument("--distill-weight", type=_at_least(0.0, float), default=1.0,
                   help="weight of the distillation term (with --teacher)")
    p.add_argument("--temperature", type=POSITIVE_FLOAT, default=2.0, help="distillation temperature (with --teacher)")
    p.add_argument("--distill-features", type=_at_least(0.0, float), default=0.0,
                   help="with --teacher: also Ultralytics' feature distillation (neck features) at this weight, e.g. 6")
    p.add_argument("--work-dir", default=None, help="Ultralytics run folder (default: OUT's folder/<stem>-train)")
    p.add_argument("--out", required=True)
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("sensitivity", help="per-block pruning sensitivity scan (plot + suggested overrides)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--imgsz", type=_image_size, default=256)
    p.add_argument("--ratio", type=_fraction, default=0.5)
    p.add_argument("--limit", type=POSITIVE, default=64, help="val images used per evaluation")
    p.add_argument("--out", default="runs/sensitivity")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=_cmd_sensitivity)

    p = sub.add_parser("validate", help="take on-device results (JSON from the bundle's script) into the report")
    p.add_argument("bundle", help="dist/<target>")
    p.add_argument("--results", required=True, help="JSON written by validate_*.py --out on the device")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("emulate", help="run a bundle's validation script on an emulated ARM CPU (qemu) and "
                                       "check its outputs against the host's")
    p.add_argument("--target", default="rpi", help="target profile (its emulation section picks CPU and policy)")
    p.add_argument("--bundle", help="bundle folder (default dist/<target>)")
    p.add_argument("--data", default=DEFAULT_DATA, help="dataset whose val images are compared")
    p.add_argument("--count", type=POSITIVE, default=8, help="val images compared (default 8)")
    p.add_argument("--images", nargs="+", help="compare on these images instead")
    p.add_argument("--qemu-cpu", help="override the profile's qemu CPU model (e.g. to see 'max' fail)")
    p.add_argument("--out", help="report folder (default runs/emulate/<target>)")
    p.set_defaults(func=_cmd_emulate)

    latency = sub.add_parser("latency", help="measured latency model of a target runtime").add_subparsers(
        dest="latency_command", required=True, parser_class=OneLineParser)
    p = latency.add_parser("probe", help="a probe bundle of pruned variants to time on the device")
    p.add_argument("--target", required=True)
    p.add_argument("--model", help="checkpoint or model yaml (default: the shipped baseline)")
    p.add_argument("--data", default=DEFAULT_DATA, help="calibration images for INT8 probes")
    p.add_argument("--sizes", type=_sizes, help="candidate input sizes, e.g. 192,256,320 (default: the recipe's)")
    p.add_argument("--variants", type=NON_NEGATIVE, default=12, help="pruned variants per size (default 12)")
    p.add_argument("--threads", type=POSITIVE, help="threads the table is for (default: the profile's validation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--run", action="store_true", help="also time it on this host (host-runnable runtimes)")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=_cmd_latency_probe)
    p = latency.add_parser("fit", help="fit a latency model on a probe table (prints its held-out error)")
    p.add_argument("table", help="JSON written by probe_latency.py")
    p.add_argument("--holdout", type=_fraction, default=0.25, help="fraction of pruned variants held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="model JSON (default: <table>-model.json)")
    p.set_defaults(func=_cmd_latency_fit)
    p = latency.add_parser("predict", help="predicted latency of a model on a target")
    p.add_argument("--model", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--imgsz", type=_image_size)
    p.add_argument("--threads", type=POSITIVE)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--table", help="a probe table (fitted on the fly)")
    source.add_argument("--latency-model", help="a fitted latency model JSON")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=_cmd_latency_predict)

    p = sub.add_parser("budget", help="the budget search alone: input size and widths that fit a latency budget")
    p.add_argument("--model", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--data", default=DEFAULT_DATA, help="dataset yaml (the accuracy proxy's images)")
    p.add_argument("--budget", type=POSITIVE_FLOAT, default=None, help="ms at the profile's percentile")
    p.add_argument("--latency-table", default=None, help="a device's probe table (else the roofline estimate)")
    p.add_argument("--sizes", type=_sizes, default=None, help="candidate input sizes, e.g. 640,416,320")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=_cmd_budget)

    p = sub.add_parser("export", help="export formats").add_subparsers(
        dest="export_command", required=True, parser_class=OneLineParser)
    p.add_parser("list", help="registered formats and their capabilities").set_defaults(func=_cmd_export_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except EdgepruneError as error:
        print(f"edgeprune: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeprune: interrupted; finished stages are kept, re-run to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
