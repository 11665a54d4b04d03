"""Everything `deploy` can check before it writes a byte: options, target, dataset, model.

A run that would fail on its input fails here, in one pass, with one `problem — fix` line, and the
run folder and the bundle folder stay as they were (a finished run's manifest is not rewritten).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from edgeprune.data.build import BUNDLED_YAML, ensure_dataset
from edgeprune.data.dataset import Dataset, check_images, check_labels_present
from edgeprune.paths import PACKAGE
from edgeprune.errors import EdgepruneError
from edgeprune.budget.sizes import Sizes, candidate_sizes
from edgeprune.models.checkpoint import build_from_yaml, check_classes, is_model_yaml, load_model
from edgeprune.targets import Target, load_target

DEFAULT_BASELINE = PACKAGE / "baselines" / "yolo11n-synth.pt"  # `baselines/` in the checkout


@dataclass(frozen=True)
class CheckedInputs:
    target: Target  # recipe.imgsz set to the largest candidate size (the baseline's)
    dataset: Dataset
    model_spec: str  # a checkpoint path or an Ultralytics model yaml
    sizes: Sizes  # the input sizes the budget search may choose from


def check_options(options: dict[str, tuple[float | None, float]]) -> None:
    """`{name: (value, minimum)}`: every given value must be at least its minimum; all misses in one line."""
    problems = [f"--{name.replace('_', '-')} {value} must be >= {minimum}"
                for name, (value, minimum) in options.items() if value is not None and value < minimum]
    if problems:
        raise EdgepruneError("; ".join(problems), "pass values in range (see `edgeprune deploy --help`)")


def check_model_yaml(spec: str) -> None:
    """A model yaml must exist (Ultralytics' or a file) and build a detector, not a classifier or segmenter."""
    from ultralytics.nn.tasks import guess_model_task, yaml_model_load

    try:
        task = guess_model_task(yaml_model_load(spec))
    except FileNotFoundError:
        raise EdgepruneError(f"model yaml {spec!r} not found",
                             "use an Ultralytics model yaml such as yolo11n.yaml, yolov8n.yaml or yolo26n.yaml") from None
    except Exception as error:  # a yaml that is not a model description
        raise EdgepruneError(f"model yaml {spec!r} is not an Ultralytics model description "
                             f"({error.__class__.__name__})", "use an Ultralytics model yaml such as yolo11n.yaml") from None
    if task != "detect":
        raise EdgepruneError(f"model yaml {spec!r} builds a {task} model, not a detector",
                             "use a detection yaml (yolo11n.yaml, not -cls/-seg/-pose/-obb)")


def check_model(spec: str, dataset: Dataset, data_ref: str, trust: bool = False):
    """The model (an untrained one for a yaml: its architecture is what the budget check needs)."""
    if is_model_yaml(spec):
        check_model_yaml(spec)
        return build_from_yaml(spec, dataset.nc)
    model = load_model(spec, trust=trust)
    check_classes(model, dataset.names, spec, data_ref)
    return model


def check_budget(model, target: Target, sizes: Sizes, latency_model) -> None:
    """A budget nothing can meet stops before any training. Skipped where the predictions are later anchored to a
    timing here (device.measure_here): the plan checks it again then."""
    if target.recipe.prune.goal != "budget" or target.device.measure_here:
        return
    from edgeprune.budget.plan import check_reachable, predictors_for
    from edgeprune.pruning.structured import PruneConfig

    cfg = PruneConfig.from_recipe(target.recipe.prune, target.device.round_to, sizes.largest)
    check_reachable(model, target, sizes, predictors_for(model, target, sizes, latency_model, None, []), cfg)


def check_dataset(data: str) -> Dataset:
    """Load the dataset (labels parsed), then decode every image and require labels for detection."""
    dataset = ensure_dataset(data)
    check_labels_present(dataset)
    check_images(dataset)
    return dataset


def shipped_baseline(name: str) -> Path | None:
    """A short name of a shipped baseline (MODEL=yolo26n -> baselines/yolo26n-synth.pt), or None."""
    path = DEFAULT_BASELINE.parent / f"{name}-synth.pt"
    return path if "/" not in name and not Path(name).suffix and path.exists() else None


def resolve_model(model: str | None, data: str) -> str:
    """MODEL (a path, a model yaml or a shipped baseline's short name), or the shipped default baseline when none
    was given and the data is the bundled dataset."""
    if model:
        shipped = shipped_baseline(model)
        if shipped is None and "/" not in model and not Path(model).suffix:
            names = sorted(p.stem.removesuffix("-synth") for p in DEFAULT_BASELINE.parent.glob("*-synth.pt"))
            raise EdgepruneError(f"MODEL={model} is neither a file nor a shipped baseline",
                                 f"use a checkpoint path, a model yaml (yolo11n.yaml) or one of: {', '.join(names)}")
        if shipped is not None and Path(data).resolve() != BUNDLED_YAML.resolve():
            raise EdgepruneError(f"MODEL={model} is the shipped baseline of the bundled dataset, not of {data}",
                                 "pass your own checkpoint, or a model yaml to train one on this dataset")
        return str(shipped or model)
    if Path(data).resolve() != BUNDLED_YAML.resolve():
        raise EdgepruneError(f"no MODEL given for dataset {data}: the bundled baseline only knows the bundled data",
                             "pass MODEL=<your checkpoint.pt> or MODEL=yolo11n.yaml to train one on this dataset")
    if not DEFAULT_BASELINE.exists():
        raise EdgepruneError(f"the project's baseline {DEFAULT_BASELINE} is missing",
                             "run `make baseline` to train it, or pass MODEL=")
    return str(DEFAULT_BASELINE)


def check_deploy(request) -> CheckedInputs:
    """The one up-front pass of `deploy` (request: a pipeline.DeployRequest)."""
    check_options({"epochs": (request.epochs, 0), "imgsz": (request.imgsz, 32),
                   "calibration_images": (request.calibration_images, 1), "eval_limit": (request.eval_limit, 1),
                   "baseline_epochs": (request.baseline_epochs, 1), "threads": (request.threads, 1)})
    target = load_target(request.target, imgsz=request.imgsz, finetune_epochs=request.epochs,
                         flops_reduction=request.flops_reduction, calibration_images=request.calibration_images,
                         latency_budget_ms=request.latency_budget_ms)
    dataset = check_dataset(request.data)
    model_spec = resolve_model(request.model, request.data)
    model = check_model(model_spec, dataset, request.data, trust=request.trust_checkpoint)
    latency_model = None
    if request.latency_table:  # a table for another runtime, precision or thread count stops here, not after training
        from edgeprune.latency.model import model_for

        latency_model = model_for(Path(request.latency_table), target)
    sizes = candidate_sizes(target, dataset, None if is_model_yaml(model_spec) else model)
    check_budget(model, target, sizes, latency_model)
    largest = dataclasses.replace(target, recipe=dataclasses.replace(target.recipe, imgsz=sizes.largest))
    return CheckedInputs(largest, dataset, model_spec, sizes)
