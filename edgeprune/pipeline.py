"""`edgeprune deploy`: baseline -> prune -> fine-tune -> INT8 export -> evaluate artefact -> bundle.

Each stage reads files and writes files under runs/<target>/<stage>/ and records itself in
runs/<target>/manifest.json. A stage whose config and input hashes are unchanged, and whose
outputs are intact, is skipped, so a re-run after a crash or Ctrl-C redoes only unfinished work.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from edgeprune import runtimes
from edgeprune.data.batches import DEFAULT_IMAGES as LOSS_IMAGES
from edgeprune.data.batches import loss_batches
from edgeprune.data.build import BUNDLED_YAML
from edgeprune.data.dataset import Dataset
from edgeprune.env import PROJECT_ROOT
from edgeprune.errors import EdgepruneError
from edgeprune.evaluation.detection import evaluate, torch_runner
from edgeprune.evaluation.latency import measure
from edgeprune.evaluation.model_stats import model_stats
from edgeprune.evaluation.roofline import activation_elements, estimate_latency_ms
from edgeprune.exporters.registry import get_exporter
from edgeprune.training.trainer import TrainConfig, finetune_recipe, train
from edgeprune.manifest import Manifest, atomic_write_json, jsonable, scratch_dir, sha256_file, sweep_leftovers
from edgeprune.models.checkpoint import build_from_yaml, check_classes, load_model, save_model
from edgeprune.preflight import check_deploy
from edgeprune.pruning.iterative import iterative_prune
from edgeprune.pruning.structured import DATA_CRITERIA, PruneConfig, prune
from edgeprune.quantize.calibration import calibration_set
from edgeprune.quantize.guard import export_with_guard, move_into
from edgeprune.targets import Target



@dataclass
class DeployRequest:
    target: "str | Target"  # a profile name, a yaml path or a Target
    model: str | None = None
    data: str = str(BUNDLED_YAML)
    out: Path = PROJECT_ROOT / "dist"
    run_dir: Path | None = None
    epochs: int | None = None
    imgsz: int | None = None
    flops_reduction: float | None = None
    calibration_images: int | None = None
    eval_limit: int | None = None  # evaluate on the first N val images (tests)
    baseline_epochs: int = 60  # when MODEL is a yaml: epochs to train it first
    threads: int = 2  # host latency threads
    trust_checkpoint: bool = False  # load MODEL (and the run's own checkpoints) as full pickles: runs their code


@dataclass
class DeployResult:
    target: Target
    bundle: Path
    rows: list[dict] = field(default_factory=list)
    comparison: list[dict] = field(default_factory=list)  # unpruned baseline vs compressed, in the target runtime

    def summary(self) -> str:
        first, last = self.rows[0], self.rows[-1]
        lines = [f"bundle -> {self.bundle} (report.md, report.html)",
                 f"{first['stage']} -> {last['stage']}: mAP50-95 {first['map50_95']:.3f} -> {last['map50_95']:.3f}, "
                 f"GFLOPs {first['gflops']:.2f} -> {last['gflops']:.2f}, params {first['params'] / 1e6:.2f}M -> "
                 f"{last['params'] / 1e6:.2f}M"]
        if self.comparison:
            from edgeprune.report import speedup

            base, deployed = self.comparison
            ratio = speedup(self.comparison)
            lines.append(f"in {deployed['runtime']} ({self.target.precision}, this host): unpruned baseline "
                         f"{base['latency_p50_ms']:.2f} ms / mAP50-95 {base['map50_95']:.3f} -> deployed "
                         f"{deployed['latency_p50_ms']:.2f} ms / {deployed['map50_95']:.3f}"
                         + (f" ({ratio:.2f}x as fast, timed side by side)" if ratio and base["side_by_side"] else ""))
        return "\n".join(lines)


class Stages:
    """Runs named stages against one manifest, skipping those already done with the same inputs."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.manifest = Manifest(run_dir / "manifest.json")

    def run(self, name: str, config: dict, inputs: dict[str, str], outputs: list[Path], work) -> dict:
        if self.manifest.is_current(name, config, inputs):
            print(f"[{name}] up to date, skipped")
            return self.manifest.stage(name)["metrics"]
        stage_dir = self.run_dir / name
        marker = stage_dir / ".started.json"
        started = {"config": config, "inputs": inputs}
        if marker.exists() and json.loads(marker.read_text()) != jsonable(started):
            shutil.rmtree(stage_dir)  # leftovers of a different configuration must not be resumed
        stage_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, started)
        print(f"[{name}] running ...")
        start = time.time()
        metrics = work()
        outputs = outputs() if callable(outputs) else outputs
        entry = self.manifest.record(name, config, inputs, outputs, metrics, time.time() - start)
        print(f"[{name}] done in {entry['wall_s']:.0f} s")
        return metrics


def quantization_aware_retry(exporter, tuned, artefact: Path, imgsz: int, calib, reference: float, target: Target,
                             dataset: Dataset, work_dir: Path, measure_file, ptq: dict, trust: bool = False) -> dict:
    """PTQ missed the budget: fine-tune through fake INT8 (edgeprune.quantize.qat), export again with the guard,
    and keep whichever artefact is more accurate (the QAT one replaces the PTQ files only if it wins)."""
    mode = "asymmetric" if target.runtime == "tflite" else "symmetric"
    cfg = finetune_recipe(target.qat_epochs, imgsz, lr0=0.001, close_mosaic=target.qat_epochs, qat=mode)
    print(f"  INT8 guard: PTQ missed the budget; quantization-aware fine-tuning for {cfg.epochs} epochs ({mode})")
    qat_model = train(copy.deepcopy(tuned), dataset, cfg, work_dir, trust=trust)  # updates its module in place
    with scratch_dir("qat", dir=artefact.parent) as tmp:
        candidate = Path(tmp) / artefact.name
        out = export_with_guard(exporter, qat_model, candidate, imgsz, target.precision, calib, reference,
                                target.max_map_drop, measure_file, target.guard_search_units)
        wins = out["map50_95"] > ptq["map50_95"]
        summary = {"epochs": cfg.epochs, "mode": mode, "ptq_map50_95": ptq["map50_95"],
                   "qat_map50_95": out["map50_95"], "kept": wins}
        print(f"  INT8 guard: QAT artefact {out['map50_95']:.4f} vs PTQ {ptq['map50_95']:.4f} -> keeping "
              f"{'QAT' if wins else 'PTQ'}")
        if not wins:
            ptq["accuracy_guard"]["qat"] = summary
            return ptq
        out["accuracy_guard"]["qat"] = summary
        move_into(Path(tmp), artefact.parent)
    return out


def source_hash(*subpackages: str) -> str:
    """sha256 of edgeprune's own sources in these subpackages: a stage whose code changed is not up to date."""
    digest = hashlib.sha256()
    for path in sorted(f for name in subpackages for f in (Path(__file__).parent / name).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _torch_metrics(model: torch.nn.Module, dataset: Dataset, imgsz: int, req: DeployRequest, desc: str) -> dict:
    torch.set_num_threads(req.threads)
    run = torch_runner(model)
    metrics = evaluate(run, dataset, imgsz, desc=desc, limit=req.eval_limit)
    metrics.update(model_stats(model, imgsz))
    metrics["latency"] = measure(run, imgsz)
    metrics["runtime"] = f"pytorch ({req.threads} threads)"
    return metrics


def deploy(req: DeployRequest) -> DeployResult:
    checked = check_deploy(req)  # every input is checked before the run folder is touched
    target, dataset, model_spec = checked.target, checked.dataset, checked.model_spec
    trust = req.trust_checkpoint
    run_dir = Path(req.run_dir or PROJECT_ROOT / "runs" / target.name).resolve()
    sweep_leftovers(run_dir, Path(req.out))
    stages = Stages(run_dir)
    stages.manifest.set("request", {k: str(v) for k, v in asdict(req).items()})
    stages.manifest.set("target", asdict(target))
    data_sha = dataset.content_hash()
    imgsz = target.imgsz
    metrics: dict[str, dict] = {}

    # 1. baseline: load (or train from a yaml) and measure
    base_pt = run_dir / "baseline" / "model.pt"
    is_yaml = checked.is_yaml
    model_input = {"model": model_spec if is_yaml else sha256_file(Path(model_spec)), "data": data_sha}

    def baseline_stage():
        if is_yaml:
            model = build_from_yaml(model_spec, dataset.nc)
            cfg = TrainConfig(epochs=req.baseline_epochs, imgsz=imgsz, close_mosaic=10)
            model = train(model, dataset, cfg, run_dir / "baseline", trust=trust)
        else:
            model = load_model(model_spec, trust=trust)
        check_classes(model, dataset.names, model_spec, req.data)
        model.names = dict(enumerate(dataset.names))
        save_model(model, base_pt, meta={"source": model_spec})
        return _torch_metrics(model, dataset, imgsz, req, "eval baseline")

    metrics["baseline"] = stages.run("baseline", {"model": model_spec, "imgsz": imgsz}, model_input, [base_pt],
                                     baseline_stage)

    # 2. structured pruning to the target's FLOPs goal
    prune_cfg = PruneConfig(flops_reduction=target.flops_reduction, criterion=target.prune_criterion,
                            round_to=target.round_to, imgsz=imgsz, global_ranking=target.prune_global_ranking)
    pruned_pt, record = run_dir / "prune" / "model.pt", run_dir / "prune" / "record.json"
    scores_with_data = prune_cfg.criterion in DATA_CRITERIA  # taylor: loss gradients on train images
    epochs_between = max(1, target.finetune_epochs // target.prune_steps)  # iterative pruning only
    prune_config = {**asdict(prune_cfg), **({"loss_images": LOSS_IMAGES} if scores_with_data else {}),
                    **({"steps": target.prune_steps, "epochs_between": epochs_between}
                       if target.prune_steps > 1 else {})}
    prune_inputs = {"model": sha256_file(base_pt),
                    **({"data": data_sha} if scores_with_data or target.prune_steps > 1 else {})}

    def prune_stage():
        batches = (lambda: loss_batches(dataset, imgsz, LOSS_IMAGES)) if scores_with_data else (lambda: None)
        steps_log = []
        if target.prune_steps > 1:  # cut in steps with fine-tuning between; the finetune stage follows the last
            between = finetune_recipe(epochs_between, imgsz, close_mosaic=1)
            pruned, result, steps_log = iterative_prune(
                load_model(base_pt, trust=trust), prune_cfg, target.prune_steps,
                lambda model, step: train(model, dataset, between, run_dir / "prune" / f"step{step}", trust=trust),
                batches)
        else:
            pruned, result = prune(load_model(base_pt, trust=trust), prune_cfg, batches=batches())
        save_model(pruned, pruned_pt, meta={"pruning": result.summary()})
        atomic_write_json(record, {"summary": result.summary(), "kept_channels": result.replay_record(),
                                   "torch_pruning_history": result.history})
        out = _torch_metrics(pruned, dataset, imgsz, req, "eval pruned")
        out["pruning"] = {k: v for k, v in result.summary().items() if k not in ("layers",)}
        if steps_log:
            out["pruning"]["steps"] = steps_log
        return out

    metrics["prune"] = stages.run("prune", prune_config, prune_inputs, [pruned_pt, record], prune_stage)

    # 3. fine-tuning that keeps the pruned architecture
    train_cfg = finetune_recipe(target.finetune_epochs, imgsz, distill_weight=target.distill_weight,
                                distill_temperature=target.distill_temperature)
    tuned_pt = run_dir / "finetune" / "model.pt"
    distilling = train_cfg.distill_weight > 0  # the unpruned baseline teaches the pruned student

    def finetune_stage():
        teacher = load_model(base_pt, trust=trust) if distilling else None
        tuned = train(load_model(pruned_pt, trust=trust), dataset, train_cfg, run_dir / "finetune", teacher=teacher,
                      trust=trust)
        save_model(tuned, tuned_pt, meta={"finetune": asdict(train_cfg)})
        return _torch_metrics(tuned, dataset, imgsz, req, "eval fine-tuned")

    if train_cfg.epochs > 0:
        finetune_inputs = {"model": sha256_file(pruned_pt), "data": data_sha,
                           **({"teacher": sha256_file(base_pt)} if distilling else {})}
        metrics["finetune"] = stages.run("finetune", asdict(train_cfg), finetune_inputs, [tuned_pt], finetune_stage)
    else:
        tuned_pt = pruned_pt

    # 4. INT8 export for the target, measured by running the artefact itself
    exporter = get_exporter(target.artefact)
    export_name = f"export-{target.name}"  # targets may share one run dir's trunk (baseline, prune, fine-tune)
    artefact = run_dir / export_name / f"model_{target.precision}{exporter.caps.suffix}"
    export_cfg = {"format": target.artefact, "precision": target.precision, "imgsz": imgsz,
                  "calibration_images": target.calibration_images, "max_map_drop": target.max_map_drop,
                  "guard_levels": list(exporter.caps.guard_levels), "guard_search_units": target.guard_search_units,
                  "code": source_hash("exporters", "quantize")}  # changed export/quantization code re-runs the export

    def calibration():  # one cached set for every INT8 export of this run
        if target.precision != "int8":
            return None
        return calibration_set(dataset, imgsz, target.calibration_images,
                               cache=run_dir / "calibration" / f"calibration_{imgsz}.npy")

    def export_stage():
        calib = calibration()
        tuned = load_model(tuned_pt, trust=trust)
        reference = metrics["finetune" if "finetune" in metrics else "prune"]["map50_95"]
        measure_file = lambda path: artefact_metrics(path, dataset, imgsz, req, tuned)  # noqa: E731
        out = export_with_guard(exporter, tuned, artefact, imgsz, target.precision, calib, reference,
                                target.max_map_drop, measure_file, target.guard_search_units)
        if target.precision == "int8" and target.qat_epochs > 0 and not out["accuracy_guard"]["within_budget"]:
            out = quantization_aware_retry(exporter, tuned, artefact, imgsz, calib, reference, target, dataset,
                                           run_dir / f"qat-{target.name}", measure_file, out, trust)
        stats = model_stats(tuned, imgsz)
        out["device_estimate"] = estimate_latency_ms(stats["gflops"], stats["params"],
                                                     activation_elements(tuned, imgsz), target)
        return out

    metrics["export"] = stages.run(export_name, export_cfg, {"model": sha256_file(tuned_pt), "data": data_sha},
                                   lambda: export_files(artefact.parent), export_stage)

    # 5. the unpruned baseline through the same export recipe, timed side by side with the compressed artefact
    reference_file = run_dir / f"reference-{target.name}" / artefact.name
    guard = metrics["export"].get("accuracy_guard") or {}
    reference_cfg = {**{k: export_cfg[k] for k in ("format", "precision", "imgsz", "calibration_images", "code")},
                     "recipe": guard.get("chosen", "none"), "timing": source_hash("evaluation")}

    def reference_stage():
        calib = calibration()
        base = load_model(base_pt, trust=trust)
        export_same_recipe(exporter, base, reference_file, imgsz, target.precision, calib, guard)
        out = artefact_metrics(reference_file, dataset, imgsz, req, base)
        stats = model_stats(base, imgsz)
        out.update(stats, recipe=reference_cfg["recipe"], side_by_side=side_by_side(
            {"baseline": reference_file, "compressed": artefact}, imgsz, req.threads))
        out["device_estimate"] = estimate_latency_ms(stats["gflops"], stats["params"],
                                                     activation_elements(base, imgsz), target)
        return out

    reference = stages.run(f"reference-{target.name}", reference_cfg,
                           {"model": sha256_file(base_pt), "compressed": sha256_file(artefact), "data": data_sha},
                           lambda: export_files(reference_file.parent), reference_stage)

    from edgeprune.bundle import write_bundle
    from edgeprune.report import comparison_rows, report_rows

    rows = report_rows(metrics, target, artefact)
    comparison = comparison_rows(reference, metrics["export"], rows, target)
    widths = json.loads(record.read_text())["summary"]["layers"]
    end2end = bool(getattr(load_model(tuned_pt, trust=trust).model[-1], "end2end", False))
    bundle = write_bundle(target, dataset, export_files(artefact.parent), artefact, rows, stages.manifest,
                          metrics["export"], Path(req.out) / target.name, end2end,
                          comparison=comparison, widths=widths)
    return DeployResult(target, bundle, rows, comparison)


def export_same_recipe(exporter, model: torch.nn.Module, out: Path, imgsz: int, precision: str, calibration,
                       guard: dict) -> Path:
    """Export `model` with what the INT8 guard chose for the compressed model (same float scope, same blocks kept
    in float), so the two artefacts differ only by pruning and fine-tuning."""
    from edgeprune.quantize.sensitivity import float_units

    chosen = guard.get("chosen", "none")
    if precision != "int8" or len(exporter.caps.guard_levels) <= 1:
        return exporter.export(model, out, imgsz, precision, calibration)
    level = chosen.split("+")[0]
    wanted = set(guard.get("float_units", []))
    units = tuple(u for u in float_units(model) if u.name in wanted)
    return exporter.export(model, out, imgsz, precision, calibration, float_scope=level, float_units=units)


def side_by_side(files: dict[str, Path], imgsz: int, threads: int) -> dict | None:
    """Latency of artefacts timed in interleaved turns in one process (ratios of separate runs scatter);
    None for formats this host cannot run (CoreML)."""
    from edgeprune.evaluation.latency import measure_interleaved

    if any(path.suffix not in runtimes.SUFFIX_RUNTIME for path in files.values()):
        return None
    runners = {name: runtimes.load(path, threads=threads, imgsz=imgsz) for name, path in files.items()}
    timed = measure_interleaved({name: runner.run for name, runner in runners.items()}, imgsz, rounds=12)
    runtime = next(iter(runners.values())).runtime
    return {"runtime": f"{runtime} ({threads} threads)", "latency": timed,
            "ratio_p50": round(timed["compressed"]["p50_ms"] / timed["baseline"]["p50_ms"], 3)}


def export_files(folder: Path) -> list[Path]:
    """What the export stage produced for the device (calibration caches and markers stay behind)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix != ".npy"
                  and (p.is_file() or p.suffix == ".mlpackage"))


def coreml_metrics(artefact: Path, model: torch.nn.Module, dataset: Dataset, imgsz: int, req: DeployRequest) -> dict:
    """CoreML predicts only on macOS: verify the spec, and measure a labelled int8-weight proxy instead."""
    from edgeprune.exporters.coreml import inspect_spec
    from edgeprune.quantize.weight_proxy import int8_weight_proxy

    proxy = int8_weight_proxy(model)
    metrics = evaluate(torch_runner(proxy), dataset, imgsz, desc="eval int8-weight proxy", limit=req.eval_limit)
    metrics["latency"] = measure(torch_runner(proxy), imgsz)
    metrics["runtime"] = "proxy: PyTorch with the package's int8 weights (CoreML cannot predict on Linux)"
    metrics["size_bytes"] = sum(p.stat().st_size for p in artefact.rglob("*") if p.is_file())
    metrics["coreml_spec"] = inspect_spec(artefact)
    return metrics


def artefact_metrics(artefact: Path, dataset: Dataset, imgsz: int, req: DeployRequest,
                     model: torch.nn.Module | None = None) -> dict:
    if artefact.suffix == ".mlpackage":
        return coreml_metrics(artefact, model, dataset, imgsz, req)
    runner = runtimes.load(artefact, threads=req.threads, imgsz=imgsz)
    metrics = evaluate(runner.run, dataset, imgsz, desc=f"eval {artefact.name}", limit=req.eval_limit)
    metrics["latency"] = measure(runner.run, imgsz)
    metrics["runtime"] = f"{runner.runtime} ({req.threads} threads)"
    metrics["size_bytes"] = artefact.stat().st_size
    metrics["io_dtypes"] = {"input": runner.input_dtype, "output": runner.output_dtype}
    if artefact.suffix == ".tflite":
        from edgeprune.exporters.inspect_tflite import tensor_dtype_census

        metrics["tensor_dtypes"] = tensor_dtype_census(artefact)
    elif artefact.suffix == ".onnx" and "int8" in artefact.name:
        from edgeprune.exporters.tensorrt import check_for_tensorrt

        metrics["tensorrt_checks"] = check_for_tensorrt(artefact)
    return metrics

