"""The deploy stages as units: each has a name, a config, input hashes, outputs and a run.

A `Run` holds what the stages share (request, target, dataset, run folder, the metrics so far and
the files each stage leaves for the next). A stage function builds its `Stage` from the Run when the
pipeline reaches it, so its input hashes are those of the previous stages' finished files; `STAGES`
is the order `deploy` follows. Any one stage runs alone given a Run whose earlier outputs exist.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from edgeprune import formats
from edgeprune.budget.flops import prune_to_flops
from edgeprune.budget.plan import plan_budget
from edgeprune.budget.proxy import name as proxy_name
from edgeprune.budget.proxy import proxy_map
from edgeprune.budget.sizes import Sizes
from edgeprune.budget.timing import here_timer
from edgeprune.data.batches import DEFAULT_IMAGES as LOSS_IMAGES
from edgeprune.data.batches import loss_batches
from edgeprune.data.dataset import Dataset
from edgeprune.evaluation.artefact import artefact_metrics
from edgeprune.evaluation.detection import evaluate, torch_runner
from edgeprune.evaluation.latency import measure
from edgeprune.evaluation.model_stats import model_stats
from edgeprune.latency.roofline import activation_elements, estimate_latency_ms
from edgeprune.manifest import atomic_write_json, scratch_dir, sha256_file
from edgeprune.models.checkpoint import build_from_yaml, check_classes, is_model_yaml, load_model, save_model
from edgeprune.pruning.iterative import iterative_prune
from edgeprune.pruning.structured import DATA_CRITERIA, PruneConfig, prune_to_widths
from edgeprune.quantize.calibration import calibration_set
from edgeprune.quantize.guard import export_with_guard, move_into
from edgeprune.targets import Target
from edgeprune.training.trainer import TrainConfig, finetune_recipe, train


@dataclass(frozen=True)
class Stage:
    name: str  # its folder under the run folder and its manifest entry
    key: str  # what the report calls it: baseline, prune, finetune, export, reference
    config: dict
    inputs: dict[str, str]  # name -> sha256 (or the model yaml's name)
    outputs: Callable[[], list[Path]]  # the files it leaves, listed once it has run
    run: Callable[[], dict]  # does the work, returns its metrics


@dataclass
class Run:
    """One deploy's shared state: inputs checked by preflight, the run folder, and what the stages produced."""
    request: object  # pipeline.DeployRequest
    target: Target
    dataset: Dataset
    model_spec: str
    run_dir: Path
    metrics: dict[str, dict] = field(default_factory=dict)
    sizes: Sizes | None = None  # the input sizes the budget search chooses from (preflight); None: the target's

    def use_plan(self, plan: dict) -> None:
        """The budget search chose the input size and precision: every later stage works at them."""
        chosen = plan["chosen"]
        recipe = dataclasses.replace(self.target.recipe, imgsz=chosen["imgsz"],
                                     precision=chosen.get("precision") or self.target.recipe.precision)
        self.target = dataclasses.replace(self.target, recipe=recipe)

    @property
    def finetunes(self) -> bool:
        """Fine-tuning recovers what pruning took and adapts the model to a smaller input: none when the budget
        plan kept the model whole at its largest size."""
        plan = self.metrics.get("plan", {})
        chosen = plan.get("chosen")
        changed = chosen is None or chosen["pruned"] or chosen["imgsz"] < max(plan.get("sizes") or [0])
        return self.target.recipe.finetune.epochs > 0 and changed

    def prune_config(self) -> PruneConfig:
        prune = self.target.recipe.prune
        return PruneConfig.from_recipe(self.target.recipe.prune, self.target.device.round_to, self.imgsz)

    @property
    def imgsz(self) -> int:
        return self.target.recipe.imgsz

    @property
    def trust(self) -> bool:
        return self.request.trust_checkpoint

    @cached_property
    def data_sha(self) -> str:
        return self.dataset.content_hash()

    @cached_property
    def exporter(self):
        return formats.get(self.target.device.format)

    def path(self, stage: str, name: str) -> Path:
        return self.run_dir / stage / name

    @property
    def base_pt(self) -> Path:
        return self.path("baseline", "model.pt")

    @property
    def pruned_pt(self) -> Path:
        return self.path("prune", "model.pt")

    @property
    def record(self) -> Path:
        return self.path("prune", "record.json")

    @property
    def tuned_pt(self) -> Path:
        """The model the export starts from: the fine-tuned one, or the pruned one with no fine-tuning."""
        return self.path("finetune", "model.pt") if self.finetunes else self.pruned_pt

    @property
    def artefact(self) -> Path:
        return self.path(f"export-{self.target.name}", f"model_{self.target.recipe.precision}{self.exporter.caps.suffix}")

    @property
    def reference_file(self) -> Path:
        return self.path(f"reference-{self.target.name}", self.artefact.name)

    def load(self, path: Path) -> torch.nn.Module:
        return load_model(path, trust=self.trust)

    def calibration(self) -> np.ndarray | None:
        """One cached calibration set for every INT8 export of this run."""
        if self.target.recipe.precision != "int8":
            return None
        return calibration_set(self.dataset, self.imgsz, self.target.recipe.quantize.calibration_images,
                               cache=self.run_dir / "calibration" / f"calibration_{self.imgsz}.npy")

    def torch_metrics(self, model: torch.nn.Module, desc: str) -> dict:
        threads = self.request.threads
        torch.set_num_threads(threads)
        run = torch_runner(model)
        metrics = evaluate(run, self.dataset, self.imgsz, desc=desc, limit=self.request.eval_limit)
        metrics.update(model_stats(model, self.imgsz))
        metrics["latency"] = measure(run, self.imgsz)
        metrics["runtime"] = f"pytorch ({threads} threads)"
        return metrics

    def measure_file(self, path: Path, model: torch.nn.Module | None = None) -> dict:
        return artefact_metrics(path, self.dataset, self.imgsz, self.request.threads, self.request.eval_limit, model,
                                self.exporter)

    @cached_property
    def latency_model(self):
        """The device's measured latency model (fitted on --latency-table), or None: the roofline estimate."""
        from edgeprune.latency.model import model_for

        return model_for(Path(self.request.latency_table), self.target) if self.request.latency_table else None

    def latency_prediction(self, model: torch.nn.Module) -> dict:
        from edgeprune.latency.model import predict

        return predict(model, self.imgsz, self.target, self.latency_model)

    def device_estimate(self, model: torch.nn.Module) -> dict:
        stats = model_stats(model, self.imgsz)
        return estimate_latency_ms(stats["gflops"], stats["params"], activation_elements(model, self.imgsz),
                                   self.target)


def source_hash(*subpackages: str) -> str:
    """sha256 of edgeprune's own sources in these subpackages: a stage whose code changed is not up to date."""
    digest = hashlib.sha256()
    for path in sorted(f for name in subpackages for f in (Path(__file__).parent / name).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def baseline_stage(run: Run) -> Stage:
    """Load MODEL (or train it from a yaml), name its classes, measure it."""
    spec, req, is_yaml = run.model_spec, run.request, is_model_yaml(run.model_spec)

    def work() -> dict:
        if is_yaml:
            model = build_from_yaml(spec, run.dataset.nc)
            cfg = TrainConfig(epochs=req.baseline_epochs, imgsz=run.imgsz, close_mosaic=10)
            model = train(model, run.dataset, cfg, run.run_dir / "baseline", trust=run.trust)
        else:
            model = run.load(Path(spec))
        check_classes(model, run.dataset.names, spec, req.data)
        model.names = dict(enumerate(run.dataset.names))
        save_model(model, run.base_pt, meta={"source": spec})
        return run.torch_metrics(model, "eval baseline")

    inputs = {"model": spec if is_yaml else sha256_file(Path(spec)), "data": run.data_sha}
    return Stage("baseline", "baseline", {"model": spec, "imgsz": run.imgsz}, inputs, lambda: [run.base_pt], work)


PROXY_TRAIN_IMAGES, PROXY_VAL_IMAGES = 128, 64  # the budget search's adaptive-BN proxy


def plan_stage(run: Run) -> Stage | None:
    """The budget search: the input size and channel widths predicted to fit the latency budget (goal: budget)."""
    target = run.target
    if target.recipe.prune.goal != "budget":
        return None
    cfg = run.prune_config()
    plan_file = run.path("plan", "plan.json")
    sizes = run.sizes or Sizes((run.imgsz,), "fixed by the target")
    val_images = min(PROXY_VAL_IMAGES, run.request.eval_limit or PROXY_VAL_IMAGES)
    config = {"budget": asdict(target.budget), "sizes": list(sizes.candidates), "round_to": cfg.round_to,
              "criterion": cfg.criterion, "attention_heads": cfg.attention_heads, "precisions": list(target.recipe.searched_precisions),
              "max_map_drop": target.recipe.quantize.max_map_drop, "measure_here": target.device.measure_here,
              "proxy": {"train_images": PROXY_TRAIN_IMAGES, "val_images": val_images,
                        "epochs": target.recipe.prune.proxy_epochs},
              **({"loss_images": LOSS_IMAGES} if cfg.criterion in DATA_CRITERIA else {}),
              "code": source_hash("budget", "pruning", "latency")}
    table = run.request.latency_table

    def proxy(model: torch.nn.Module, imgsz: int) -> float:
        images = calibration_set(run.dataset, imgsz, PROXY_TRAIN_IMAGES,
                                 cache=run.run_dir / "calibration" / f"proxy_{imgsz}.npy")
        return proxy_map(model, run.dataset, imgsz, images, val_images, target.recipe.prune.proxy_epochs, run.run_dir)

    def work() -> dict:
        base = run.load(run.base_pt)
        batches = (lambda imgsz: loss_batches(run.dataset, imgsz, LOSS_IMAGES)) if cfg.criterion in DATA_CRITERIA else None
        with scratch_dir("plan-timing", dir=run.run_dir) as tmp:  # exported candidates are timed, then dropped
            timer = (here_timer(target, run.dataset, Path(tmp), reference=(base, sizes.largest))
                     if target.device.measure_here else None)
            plan = plan_budget(base, target, sizes, run.latency_model, cfg, proxy, timer=timer, batches=batches,
                               proxy_name=proxy_name(target.recipe.prune.proxy_epochs))
        out = {**plan.summary(), "reason": plan.reason()}
        atomic_write_json(plan_file, {**out, "keep": plan.chosen.keep})
        print(f"  budget plan: {plan.reason()}")
        return out

    inputs = {"model": sha256_file(run.base_pt), "data": run.data_sha,
              **({"latency_table": sha256_file(Path(table))} if table else {})}
    return Stage("plan", "plan", config, inputs, lambda: [plan_file], work)


def prune_stage(run: Run) -> Stage:
    """Structured pruning to the budget plan's widths, or to the FLOPs goal (in one cut or in steps)."""
    target = run.target
    cfg = run.prune_config()
    planned = target.recipe.prune.goal == "budget"
    plan_file = run.path("plan", "plan.json")
    scores_with_data = cfg.criterion in DATA_CRITERIA  # taylor: loss gradients on train images
    steps = 1 if planned else target.recipe.prune.steps
    epochs_between = max(1, target.recipe.finetune.epochs // steps)  # iterative pruning only
    config = {**asdict(cfg), "goal": target.recipe.prune.goal, **({"loss_images": LOSS_IMAGES} if scores_with_data else {}),
              **({"steps": steps, "epochs_between": epochs_between} if steps > 1 else {})}
    inputs = {"model": sha256_file(run.base_pt),
              **({"data": run.data_sha} if scores_with_data or steps > 1 else {}),
              **({"plan": sha256_file(plan_file)} if planned else {})}

    def work() -> dict:
        batches = (lambda: loss_batches(run.dataset, run.imgsz, LOSS_IMAGES)) if scores_with_data else (lambda: None)
        steps_log = []
        if planned:
            keep = json.loads(plan_file.read_text())["keep"]
            pruned, result = prune_to_widths(run.load(run.base_pt), keep, cfg, batches=batches())
        elif steps > 1:  # cut in steps with fine-tuning between; the finetune stage follows the last
            between = finetune_recipe(epochs_between, run.imgsz, close_mosaic=1)
            pruned, result, steps_log = iterative_prune(
                run.load(run.base_pt), cfg, steps,
                lambda model, step: train(model, run.dataset, between, run.run_dir / "prune" / f"step{step}",
                                          trust=run.trust), batches, cut=prune_to_flops)
        else:
            pruned, result = prune_to_flops(run.load(run.base_pt), cfg, batches=batches())
        save_model(pruned, run.pruned_pt, meta={"pruning": result.summary()})
        atomic_write_json(run.record, {"summary": result.summary(), "kept_channels": result.replay_record(),
                                       "torch_pruning_history": result.history})
        out = run.torch_metrics(pruned, "eval pruned")
        out["pruning"] = {k: v for k, v in result.summary().items() if k not in ("layers",)}
        if steps_log:
            out["pruning"]["steps"] = steps_log
        return out

    return Stage("prune", "prune", config, inputs, lambda: [run.pruned_pt, run.record], work)


def finetune_stage(run: Run) -> Stage | None:
    """Fine-tuning that keeps the pruned architecture (optionally distilled from the baseline); None at 0 epochs."""
    target = run.target
    tune = target.recipe.finetune
    cfg = finetune_recipe(tune.epochs, run.imgsz, distill_weight=tune.distill_weight,
                          distill_temperature=tune.distill_temperature, distill_features=tune.distill_features)
    if not run.finetunes:
        return None

    def work() -> dict:
        teacher = run.load(run.base_pt) if cfg.distills else None  # the unpruned baseline teaches the student
        tuned = train(run.load(run.pruned_pt), run.dataset, cfg, run.run_dir / "finetune", teacher=teacher,
                      trust=run.trust)
        save_model(tuned, run.tuned_pt, meta={"finetune": asdict(cfg)})
        return run.torch_metrics(tuned, "eval fine-tuned")

    inputs = {"model": sha256_file(run.pruned_pt), "data": run.data_sha,
              **({"teacher": sha256_file(run.base_pt)} if cfg.distills else {})}
    return Stage("finetune", "finetune", asdict(cfg), inputs, lambda: [run.tuned_pt], work)


def export_config(run: Run) -> dict:
    target = run.target
    return {"format": target.device.format, "precision": target.recipe.precision, "imgsz": run.imgsz,
            "calibration_images": target.recipe.quantize.calibration_images, "max_map_drop": target.recipe.quantize.max_map_drop,
            "guard_levels": list(run.exporter.caps.guard_levels), "guard_search_units": target.recipe.quantize.guard_search_units,
            "code": source_hash("formats", "quantize")}  # changed export/quantization code re-runs the export


def export_stage(run: Run) -> Stage:
    """The target's artefact with the INT8 accuracy guard (and QAT when PTQ misses), measured by running it."""
    target, artefact = run.target, run.artefact

    def work() -> dict:
        calib = run.calibration()
        tuned = run.load(run.tuned_pt)
        reference = run.metrics["finetune" if "finetune" in run.metrics else "prune"]["map50_95"]
        measure_file = lambda path: run.measure_file(path, tuned)  # noqa: E731
        out = export_with_guard(run.exporter, tuned, artefact, run.imgsz, target.recipe.precision, calib, reference,
                                target.recipe.quantize.max_map_drop, measure_file, target.recipe.quantize.guard_search_units)
        if target.recipe.precision == "int8" and target.recipe.quantize.qat_epochs > 0 and not out["accuracy_guard"]["within_budget"]:
            out = quantization_aware_retry(run.exporter, tuned, artefact, run.imgsz, calib, reference, target,
                                           run.dataset, run.run_dir / f"qat-{target.name}", measure_file, out,
                                           run.trust)
        out["device_estimate"] = run.device_estimate(tuned)
        out["latency_prediction"] = run.latency_prediction(tuned)
        return out

    table = run.request.latency_table
    return Stage(f"export-{target.name}", "export", export_config(run),
                 {"model": sha256_file(run.tuned_pt), "data": run.data_sha,
                  **({"latency_table": sha256_file(Path(table))} if table else {})},
                 lambda: export_files(artefact.parent), work)


def reference_stage(run: Run) -> Stage:
    """The unpruned baseline through the same export recipe, timed side by side with the deployed artefact."""
    guard = run.metrics["export"].get("accuracy_guard") or {}
    config = {**{k: export_config(run)[k] for k in ("format", "precision", "imgsz", "calibration_images", "code")},
              "recipe": guard.get("chosen", "none"), "timing": source_hash("evaluation")}
    reference = run.reference_file

    def work() -> dict:
        base = run.load(run.base_pt)
        export_same_recipe(run.exporter, base, reference, run.imgsz, run.target.recipe.precision, run.calibration(), guard)
        out = run.measure_file(reference, base)  # params / GFLOPs come from the baseline stage's row
        out.update(recipe=config["recipe"], device_estimate=run.device_estimate(base), side_by_side=side_by_side(
            {"baseline": reference, "compressed": run.artefact}, run.imgsz, run.request.threads))
        return out

    inputs = {"model": sha256_file(run.base_pt), "compressed": sha256_file(run.artefact), "data": run.data_sha}
    return Stage(f"reference-{run.target.name}", "reference", config, inputs,
                 lambda: export_files(reference.parent), work)


STAGES = (baseline_stage, plan_stage, prune_stage, finetune_stage, export_stage, reference_stage)


def quantization_aware_retry(exporter, tuned, artefact: Path, imgsz: int, calib, reference: float, target: Target,
                             dataset: Dataset, work_dir: Path, measure_file, ptq: dict, trust: bool = False) -> dict:
    """PTQ missed the budget: fine-tune through fake INT8 (edgeprune.quantize.qat), export again with the guard,
    and keep whichever artefact is more accurate (the QAT one replaces the PTQ files only if it wins)."""
    mode = "asymmetric" if target.device.runtime == "tflite" else "symmetric"
    cfg = finetune_recipe(target.recipe.quantize.qat_epochs, imgsz, lr0=0.001, close_mosaic=target.recipe.quantize.qat_epochs, qat=mode)
    print(f"  INT8 guard: PTQ missed the budget; quantization-aware fine-tuning for {cfg.epochs} epochs ({mode})")
    qat_model = train(copy.deepcopy(tuned), dataset, cfg, work_dir, trust=trust)  # updates its module in place
    with scratch_dir("qat", dir=artefact.parent) as tmp:
        candidate = Path(tmp) / artefact.name
        out = export_with_guard(exporter, qat_model, candidate, imgsz, target.recipe.precision, calib, reference,
                                target.recipe.quantize.max_map_drop, measure_file, target.recipe.quantize.guard_search_units)
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

    if any(formats.for_artefact(path).caps.host_runtime is None for path in files.values()):
        return None
    runners = {name: formats.load_runner(path, threads=threads, imgsz=imgsz) for name, path in files.items()}
    timed = measure_interleaved({name: runner.run for name, runner in runners.items()}, imgsz, rounds=12)
    runtime = next(iter(runners.values())).runtime
    return {"runtime": f"{runtime} ({threads} threads)", "latency": timed}  # the ratio: report.speedup


def export_files(folder: Path) -> list[Path]:
    """What an export stage produced for the device (calibration caches and markers stay behind)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix != ".npy"
                  and (p.is_file() or p.suffix == ".mlpackage"))
