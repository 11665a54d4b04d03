"""The Python API: one verb per stage, over objects (modules, datasets, targets), re-exported by `edgeprune`.

    import edgeprune as ep
    model = ep.load("baselines/yolo11n-synth.pt")
    data = ep.load_dataset("datasets/synth.yaml")
    pruned, record = ep.prune(model, ep.PruneConfig(flops_reduction=0.5, imgsz=256))
    tuned = ep.finetune(pruned, data, epochs=12, imgsz=256, work_dir="runs/mine")
    out = ep.export(tuned, "tflite", "dist/model_int8.tflite", imgsz=256, precision="int8", data=data)
    print(ep.evaluate(out.path, data, imgsz=256))

The CLI is a thin layer over these functions, and `deploy` chains them for a target profile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgeprune.data.dataset import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.targets import Target


def load(model: str | Path, nc: int | None = None, trust: bool = False) -> torch.nn.Module:
    """A detection model from a checkpoint (read safely unless `trust`) or a model yaml (random weights, `nc`
    classes; the yaml's own count when None)."""
    from edgeprune.models.checkpoint import build_from_yaml, is_model_yaml, load_model
    from edgeprune.preflight import check_model_yaml

    spec = str(model)
    if is_model_yaml(spec):
        check_model_yaml(spec)
        return build_from_yaml(spec, nc).eval()
    return load_model(spec, trust=trust)


def load_dataset(yaml_path: str | Path, check_images: bool = True) -> Dataset:
    """An Ultralytics detection dataset, labels parsed and (by default) every image decoded; the bundled
    synthetic dataset is generated on first use."""
    from edgeprune.preflight import check_dataset

    if check_images:
        return check_dataset(str(yaml_path))
    from edgeprune.data.build import ensure_dataset

    return ensure_dataset(yaml_path)


def load_target(name: str | Path, **overrides) -> Target:
    """A target profile by name (`rpi`) or yaml path; keyword overrides are validated like the file."""
    from edgeprune.targets import load_target as load

    return load(str(name), **overrides)


def prune(model: torch.nn.Module, config=None, data: Dataset | None = None, images: int = 64):
    """Structured channel pruning to `config.flops_reduction` (a PruneConfig); returns (pruned copy, PruneResult).

    Data criteria (taylor) score channels with detection-loss gradients on `images` train images of `data`.
    """
    from edgeprune.data.batches import loss_batches
    from edgeprune.pruning.structured import DATA_CRITERIA, PruneConfig
    from edgeprune.budget.flops import prune_to_flops

    config = config or PruneConfig()
    batches = loss_batches(data, config.imgsz, images) if data is not None and config.criterion in DATA_CRITERIA \
        else None  # without data, a data criterion refuses with its own one-line error
    return prune_to_flops(model, config, batches=batches)


def finetune(model: torch.nn.Module, data: Dataset, epochs: int = 12, imgsz: int = 256,
             work_dir: str | Path = "runs/finetune", teacher: torch.nn.Module | None = None, config=None,
             trust: bool = False) -> torch.nn.Module:
    """Fine-tune keeping the (pruned) architecture; returns the best weights. `config` (a TrainConfig) replaces
    deploy's recipe for `epochs`/`imgsz`; with a `teacher` and no config, distillation weight 1."""
    from edgeprune.training.trainer import finetune_recipe, train

    if config is None:
        config = finetune_recipe(epochs, imgsz, distill_weight=1.0 if teacher is not None else 0.0)
    tuned = train(model, data, config, Path(work_dir), teacher=teacher, trust=trust)
    tuned.names = dict(enumerate(data.names))
    return tuned


def calibrate(data: Dataset, imgsz: int, images: int = 200, seed: int = 0) -> np.ndarray:
    """INT8 calibration images: a seeded sample of train images through the inference letterbox."""
    from edgeprune.quantize.calibration import calibration_set

    return calibration_set(data, imgsz, images, seed=seed)


@dataclass(frozen=True)
class Guard:
    """The INT8 accuracy guard: keep the parts that hurt INT8 most in float until the drop fits."""
    max_map_drop: float = 0.01  # mAP50-95 the INT8 file may lose against the same model in PyTorch FP32
    search_units: int = 6  # blocks the sensitivity search may float when every level misses


@dataclass
class Exported:
    path: Path
    metrics: dict = field(default_factory=dict)  # of the file itself (when `data` was given)


def export(model: torch.nn.Module, format: str, out: str | Path, imgsz: int, precision: str = "int8",
           data: Dataset | None = None, calibration: np.ndarray | None = None, guard: Guard | None = Guard(),
           threads: int = 2) -> Exported:
    """Export to a registered format (`edgeprune export list`). INT8 calibrates on `data` (or `calibration`);
    with `data` the file is evaluated, and for INT8 the `guard` chooses what stays float; guard=None exports
    everything INT8 unchecked."""
    from edgeprune.evaluation.detection import evaluate_model
    from edgeprune import formats
    from edgeprune.quantize.guard import export_with_guard

    exporter, out = formats.get(format), Path(out)
    exporter.check_precision(precision)
    if precision == "int8" and calibration is None:
        if data is None:
            raise EdgepruneError("INT8 export needs calibration images", "pass data=<Dataset> or calibration=")
        calibration = calibrate(data, imgsz)
    if data is None or guard is None:
        path = exporter.export(model, out, imgsz, precision, calibration)
        return Exported(path, evaluate(path, data, imgsz, threads, model) if data is not None else {})
    reference = evaluate_model(model, data, imgsz, desc="eval reference")["map50_95"]
    metrics = export_with_guard(exporter, model, out, imgsz, precision, calibration, reference, guard.max_map_drop,
                                lambda path: evaluate(path, data, imgsz, threads, model), guard.search_units)
    return Exported(out, metrics)


def evaluate(model: torch.nn.Module | str | Path, data: Dataset, imgsz: int, threads: int = 2,
             source: torch.nn.Module | None = None) -> dict:
    """mAP50-95 / mAP50 (pycocotools) and latency of a PyTorch module or an exported file, run in its runtime.

    A CoreML package cannot run here: its labelled int8-weight proxy of `source` is measured instead."""
    from edgeprune.evaluation.artefact import artefact_metrics

    if isinstance(model, torch.nn.Module):
        from edgeprune.evaluation.detection import evaluate as run_eval
        from edgeprune.evaluation.detection import torch_runner

        return run_eval(torch_runner(model), data, imgsz, desc="eval model")
    return artefact_metrics(Path(model), data, imgsz, threads, model=source)


def deploy(target: str | Target, model: str | Path | torch.nn.Module | None = None,
           data: str | Path | Dataset | None = None, out: str | Path = "dist", run_dir: str | Path | None = None,
           **options):
    """The whole pipeline for a target profile (a name, a yaml path or a Target); returns a DeployResult.

    `model` is a checkpoint, a model yaml or a module (saved into the run folder first); `options` are
    DeployRequest's (epochs, imgsz, flops_reduction, calibration_images, trust_checkpoint, ...).
    """
    from edgeprune.manifest import scratch_dir
    from edgeprune.models.checkpoint import save_model
    from edgeprune.pipeline import DeployRequest
    from edgeprune.pipeline import deploy as run_deploy

    request = DeployRequest(target=target if isinstance(target, Target) else str(target), out=Path(out),
                            run_dir=Path(run_dir) if run_dir else None, **options)
    if data is not None:
        request = dataclasses.replace(request, data=str(data.yaml_path if isinstance(data, Dataset) else data))
    if not isinstance(model, torch.nn.Module):
        return run_deploy(dataclasses.replace(request, model=str(model)) if model is not None else request)
    with scratch_dir("input") as folder:  # outside the run folder: nothing is written there before the checks
        path = save_model(model, Path(folder) / "model.pt", meta={"source": "edgeprune.deploy(module)"})
        return run_deploy(dataclasses.replace(request, model=str(path)))


def probe_latency(model: torch.nn.Module, target: Target | str, out: str | Path, sizes: tuple[int, ...] | None = None,
                  variants: int = 12, data: Dataset | None = None, seed: int = 0, source: str = "") -> Path:
    """A probe bundle for `target`: pruned variants of `model` at `sizes` (default: the recipe's imgsz) in the
    target's format and precision, with probe_latency.py to time them on the device (INT8 calibrates on `data`)."""
    from edgeprune.latency.probe import ProbePlan, build_probe

    target = load_target(target) if not isinstance(target, Target) else target
    plan = ProbePlan(tuple(sizes or (default_size(model, target),)), variants=variants, seed=seed)
    calibration = None
    if target.recipe.precision == "int8":
        if data is None:
            raise EdgepruneError("an INT8 probe calibrates on images", "pass data=<Dataset> (or --data)")
        calibration = {size: calibrate(data, size, images=16, seed=seed) for size in plan.sizes}
    return build_probe(model, target, Path(out), plan, calibration, source)


def fit_latency(table: str | Path, holdout: float = 0.25, seed: int = 0):
    """A LatencyModel fitted on a probe table from probe_latency.py (its `heldout` says how far off it was on
    variants it did not see)."""
    from edgeprune.latency.model import fit, load_table

    return fit(load_table(Path(table)), holdout=holdout, seed=seed)


def predict_latency(model: torch.nn.Module, target: Target | str, imgsz: int | None = None, latency_model=None) -> dict:
    """Predicted p50 / p<percentile> latency of `model` on the target, from a fitted LatencyModel (or a path to one),
    else the roofline estimate, labelled."""
    from edgeprune.latency.model import LatencyModel, load_model, predict

    target = load_target(target) if not isinstance(target, Target) else target
    if latency_model is not None and not isinstance(latency_model, LatencyModel):
        latency_model = load_model(Path(latency_model))
    return predict(model, imgsz or default_size(model, target), target, latency_model)


def default_size(model: torch.nn.Module, target: Target) -> int:
    """The profile's fixed size, else the model's training size, else the profile's largest candidate."""
    from edgeprune.budget.sizes import trained_size

    return target.recipe.imgsz or trained_size(model) or max(target.recipe.imgsz_candidates)


def plan_budget(model: torch.nn.Module, target: Target | str, data: Dataset, budget_ms: float | None = None,
                latency_model=None, sizes: tuple[int, ...] | None = None, work_dir: str | Path = "runs/budget"):
    """The budget search alone: candidates per precision and input size (knapsack widths predicted to fit
    `budget_ms`, default the profile's), ranked by the adaptive-BN proxy on `data`; returns a BudgetPlan
    (`.chosen`, `.reason()`). A device that is this machine (the host profile) is timed here, in `work_dir`."""
    from edgeprune.budget.plan import plan_budget as plan
    from edgeprune.budget.proxy import name as proxy_name
    from edgeprune.budget.proxy import proxy_map
    from edgeprune.budget.sizes import Sizes, candidate_sizes
    from edgeprune.budget.timing import here_timer
    from edgeprune.data.batches import loss_batches
    from edgeprune.pruning.structured import DATA_CRITERIA
    from edgeprune.latency.model import LatencyModel, load_model
    from edgeprune.pruning.structured import PruneConfig
    from edgeprune.quantize.calibration import calibration_set

    from edgeprune.targets import load_target as resolve

    target = resolve(target if isinstance(target, Target) else str(target), latency_budget_ms=budget_ms)
    if latency_model is not None and not isinstance(latency_model, LatencyModel):
        latency_model = load_model(Path(latency_model))
    found = Sizes(tuple(sorted(sizes, reverse=True)), "given") if sizes else candidate_sizes(target, data, model)
    cfg = PruneConfig.from_recipe(target.recipe.prune, target.device.round_to, found.largest)
    timer = (here_timer(target, data, Path(work_dir), reference=(model, found.largest))
             if target.device.measure_here else None)
    batches = (lambda s: loss_batches(data, s)) if cfg.criterion in DATA_CRITERIA else None
    epochs = target.recipe.prune.proxy_epochs
    return plan(model, target, found, latency_model, cfg,
                lambda m, s: proxy_map(m, data, s, calibration_set(data, s, 128), 64, epochs, Path(work_dir)),
                timer=timer, batches=batches, proxy_name=proxy_name(epochs))
