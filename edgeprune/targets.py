"""Target profiles: targets/<name>.yaml loaded into strict dataclasses (unknown keys are errors).

A profile has layers that change for different reasons: `device` (what the hardware and its runtime
are), `budget` (what the user asks of it), `validation` / `emulation` (how the bundle is checked), and
`recipe` (how edgeprune compresses for it: input size and precision, prune, finetune, quantize).
One parser (`target_from_dict`) reads every profile, from a yaml file or from a bundle's metadata.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgeprune.errors import EdgepruneError
from edgeprune.paths import PACKAGE

TARGETS_DIR = PACKAGE / "profiles"  # `targets/` in the checkout points here
PRECISIONS = ("int8", "fp16", "fp32")
PRUNE_GOALS = ("budget", "flops")


@dataclass(frozen=True)
class Hardware:
    """Facts used for latency estimates; sources are cited in the yaml comments."""
    device: str = ""
    cpu: str = ""
    cores: int = 1
    isa: str = ""
    peak_int8_tops: float = 0.0
    peak_fp16_tflops: float = 0.0
    memory_bandwidth_gbs: float = 0.0


@dataclass(frozen=True)
class Device:
    """What the device is: its runtime, the artefact format that runtime loads, its kernels' channel multiple."""
    runtime: str
    format: str  # a registered format (edgeprune export list) that deploys to `runtime`
    round_to: int = 8  # pruned channel counts are multiples of this (SIMD/tensor-core width)
    hardware: Hardware = field(default_factory=Hardware)
    measure_here: bool = False  # the deploying machine is the device: without a table, latency is timed here


@dataclass(frozen=True)
class Budget:
    """What the user asks of the device."""
    latency_ms: float
    percentile: int = 90
    batch: int = 1
    margin: float = 0.05  # fraction of latency_ms the plan leaves free for timing noise and latency-model error


@dataclass(frozen=True)
class Validation:
    """How the bundle's on-device script measures latency."""
    warmup: int = 20
    runs: int = 200
    threads: int = 4


EMULATION_POLICIES = ("bit-exact", "pre-post")


@dataclass(frozen=True)
class Emulation:
    """How `make emulate` runs the bundle on an emulated ARM CPU (deploy/emulate/README.md)."""
    qemu_cpu: str = ""  # qemu's CPU model; empty: the target cannot be emulated (x86 host, iOS)
    outputs: str = "bit-exact"  # bit-exact: all outputs equal the host's; pre-post: pre/post-processing only


@dataclass(frozen=True)
class Prune:
    goal: str = "budget"  # budget: widths chosen to fit budget.latency_ms | flops: remove flops_reduction of FLOPs
    flops_reduction: float = 0.5  # the flops goal's fraction of FLOPs removed
    criterion: str = "l2"  # l1 | l2 | bn | taylor (detection-loss gradients on train images) | random
    global_ranking: bool = False  # rank channels across layers instead of one ratio per layer
    allocation: str = "knapsack"  # flops goal: knapsack (least importance per MAC saved) | uniform (one ratio each)
    attention_heads: bool = False  # also drop whole attention heads (pruned .pt then needs edgeprune to load)
    steps: int = 1  # > 1: reach the FLOPs goal in this many cuts, fine-tuning finetune.epochs // steps between
    proxy_epochs: int = 1  # budget search: each candidate is fine-tuned this long before the proxy ranks it (0: none)


@dataclass(frozen=True)
class Finetune:
    epochs: int = 12
    distill_weight: float = 0.0  # > 0: fine-tuning distils the head outputs of the unpruned baseline at this weight
    distill_temperature: float = 2.0
    distill_features: float = 0.0  # > 0: also Ultralytics' feature distillation from the baseline at this weight


@dataclass(frozen=True)
class Quantize:
    calibration_images: int = 200
    max_map_drop: float = 0.01  # allowed mAP50-95 loss of the INT8 artefact vs its FP32 model
    guard_search_units: int = 6  # when every guard level misses: float at most this many blocks found by search
    qat_epochs: int = 0  # > 0: when PTQ misses max_map_drop, fine-tune this many epochs through fake INT8 and retry


@dataclass(frozen=True)
class Recipe:
    """How edgeprune compresses for the device."""
    precision: str
    imgsz: int = 0  # 0: chosen among imgsz_candidates (at most the model's training size); > 0: fixed
    imgsz_candidates: tuple[int, ...] = (640, 512, 416, 320, 256, 224, 192, 160)
    precision_candidates: tuple[str, ...] = ()  # the budget search also tries these (e.g. int8, fp16); () : precision
    prune: Prune = field(default_factory=Prune)
    finetune: Finetune = field(default_factory=Finetune)
    quantize: Quantize = field(default_factory=Quantize)

    @property
    def searched_precisions(self) -> tuple[str, ...]:
        """The precisions the budget search compares: `precision` first, then the other candidates."""
        return (self.precision,) + tuple(p for p in self.precision_candidates if p != self.precision)


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    device: Device
    budget: Budget
    recipe: Recipe
    validation: Validation = field(default_factory=Validation)
    emulation: Emulation = field(default_factory=Emulation)

    def __post_init__(self):
        problems = target_problems(self)
        if problems:
            raise EdgepruneError(f"target {self.name}: " + "; ".join(problems), f"edit targets/{self.name}.yaml")


def target_problems(t: Target) -> list[str]:
    from edgeprune.pruning.structured import ALLOCATIONS, CRITERIA  # here, so `import edgeprune.targets` stays light

    recipe, prune, quantize = t.recipe, t.recipe.prune, t.recipe.quantize
    problems = _format_problems(t.device.format, t.device.runtime)
    if recipe.precision not in PRECISIONS:
        problems.append(f"recipe.precision {recipe.precision!r} is not one of {PRECISIONS}")
    if recipe.imgsz < 0 or recipe.imgsz % 32:
        problems.append(f"recipe.imgsz {recipe.imgsz} is not a positive multiple of 32 (the detector's largest stride)"
                        " or 0 (chosen from recipe.imgsz_candidates)")
    if not recipe.imgsz_candidates or any(s < 32 or s % 32 for s in recipe.imgsz_candidates):
        problems.append(f"recipe.imgsz_candidates {list(recipe.imgsz_candidates)} must be multiples of 32")
    if prune.goal not in PRUNE_GOALS:
        problems.append(f"recipe.prune.goal {prune.goal!r} is not one of {PRUNE_GOALS}")
    if prune.goal == "budget" and prune.steps > 1:
        problems.append("recipe.prune.steps > 1 (iterative pruning) needs recipe.prune.goal: flops (or --flops)")
    minimums = {"recipe.finetune.epochs": (recipe.finetune.epochs, 0), "budget.batch": (t.budget.batch, 1),
                "recipe.quantize.calibration_images": (quantize.calibration_images, 1),
                "device.round_to": (t.device.round_to, 1), "recipe.quantize.max_map_drop": (quantize.max_map_drop, 0),
                "recipe.quantize.guard_search_units": (quantize.guard_search_units, 0),
                "recipe.quantize.qat_epochs (0 turns quantization-aware fine-tuning off)": (quantize.qat_epochs, 0),
                "recipe.prune.steps (1 is one-shot pruning)": (prune.steps, 1),
                "recipe.prune.proxy_epochs (0 ranks by adaptive BN alone)": (prune.proxy_epochs, 0)}
    problems += [f"{key} {value} must be >= {low}" for key, (value, low) in minimums.items() if value < low]
    fmt_precisions = _format_precisions(t.device.format)
    wrong = [p for p in recipe.precision_candidates if p not in PRECISIONS or (fmt_precisions and p not in fmt_precisions)]
    if wrong:
        problems.append(f"recipe.precision_candidates {wrong} are not precisions {t.device.format} exports "
                        f"({', '.join(fmt_precisions or PRECISIONS)})")
    if not 0 <= t.budget.margin < 0.5:
        problems.append(f"budget.margin {t.budget.margin} must be in [0, 0.5): the fraction of the budget kept free")
    if not t.budget.latency_ms > 0 or not 0 < t.budget.percentile <= 100:
        problems.append(f"budget.latency_ms {t.budget.latency_ms} must be > 0 and budget.percentile "
                        f"{t.budget.percentile} in (0, 100]")
    if t.validation.warmup < 0 or t.validation.runs < 1 or t.validation.threads < 1:
        problems.append(f"validation needs warmup >= 0, runs >= 1, threads >= 1 (got {t.validation})")
    if t.emulation.outputs not in EMULATION_POLICIES:
        problems.append(f"emulation.outputs {t.emulation.outputs!r} is not one of {EMULATION_POLICIES}")
    if not 0 <= prune.flops_reduction < 0.95:
        problems.append(f"recipe.prune.flops_reduction {prune.flops_reduction} must be in [0, 0.95)")
    if prune.criterion not in CRITERIA:
        problems.append(f"recipe.prune.criterion {prune.criterion!r} is not one of {CRITERIA}")
    if prune.allocation not in ALLOCATIONS:
        problems.append(f"recipe.prune.allocation {prune.allocation!r} is not one of {ALLOCATIONS}")
    if recipe.finetune.distill_features < 0:
        problems.append(f"recipe.finetune.distill_features {recipe.finetune.distill_features} must be >= 0 (0: off)")
    if recipe.finetune.distill_weight < 0 or recipe.finetune.distill_temperature <= 0:
        problems.append(f"recipe.finetune.distill_weight {recipe.finetune.distill_weight} must be >= 0 (0 turns "
                        f"distillation off) and distill_temperature {recipe.finetune.distill_temperature} > 0")
    return problems


def _format_problems(fmt_name: str, runtime: str) -> list[str]:
    """The format must be registered and deploy to the profile's runtime."""
    from edgeprune import formats

    if runtime not in formats.runtimes():
        return [f"device.runtime {runtime!r} is not one of {formats.runtimes()}"]
    try:
        fmt = formats.get(fmt_name, need_available=False)
    except EdgepruneError as error:
        return [error.problem]
    if fmt.caps.runtime != runtime:
        return [f"device.format {fmt_name!r} deploys to runtime {fmt.caps.runtime!r}, not {runtime!r}"]
    return []


def _format_precisions(fmt_name: str) -> tuple[str, ...]:
    from edgeprune import formats

    try:
        return formats.get(fmt_name, need_available=False).caps.precisions
    except EdgepruneError:
        return ()


def available_targets(folder: Path = TARGETS_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


SCALAR_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
LIST_TYPES = {"tuple[int, ...]": int, "tuple[str, ...]": str}  # yaml lists of one scalar type, stored as tuples
# Short names for the overrides the CLI and the API take (`--imgsz`, `finetune_epochs=`): one path each.
OVERRIDES = {"imgsz": "recipe.imgsz", "precision": "recipe.precision", "flops_reduction": "recipe.prune.flops_reduction",
             "finetune_epochs": "recipe.finetune.epochs", "calibration_images": "recipe.quantize.calibration_images",
             "latency_budget_ms": "budget.latency_ms", "threads": "validation.threads"}


def _parse(cls, values, where: str):
    """A dataclass from a mapping: unknown keys and scalars of the wrong type (a quoted number, a list for a size)
    are refused in one line; nested dataclass fields are parsed the same way."""
    if not isinstance(values, dict):
        raise EdgepruneError(f"{where}: expected a mapping of keys, got {type(values).__name__}",
                             "see targets/rpi.yaml for the expected shape")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise EdgepruneError(f"{where}: unknown key(s) {', '.join(unknown)}",
                             f"allowed keys are: {', '.join(sorted(fields))}")
    parsed = {}
    for key, value in values.items():
        kind = fields[key].type
        nested = SECTIONS.get(str(kind))
        if nested is not None:
            parsed[key] = _parse(nested, value or {}, f"{where} ({key})")
            continue
        item = LIST_TYPES.get(str(kind))
        if item is not None:
            if isinstance(value, item) and not isinstance(value, bool):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, item) and not isinstance(v, bool)
                                                                for v in value):
                raise EdgepruneError(f"{where}: {key} is {value!r}, expected a list of {item.__name__}",
                                     f"write {key} as e.g. [640, 320]")
            parsed[key] = tuple(value)
            continue
        allowed = SCALAR_TYPES.get(str(kind))
        if allowed and (not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool))):
            raise EdgepruneError(f"{where}: {key} is {value!r}, expected {kind}", f"write {key} as a plain {kind} value")
        parsed[key] = value
    try:
        return cls(**parsed)
    except TypeError as error:
        missing = str(error).split("argument")[-1].strip(": ")
        raise EdgepruneError(f"{where}: missing key(s) {missing}", "add them (see targets/rpi.yaml)") from None


# Where each key of a flat (pre-layering) profile lives now: named in the error an old profile gets.
LAYERED = {"runtime": "device.runtime", "artefact": "device.format", "round_to": "device.round_to",
           "hardware": "device.hardware", "latency_budget_ms": "budget.latency_ms",
           "latency_percentile": "budget.percentile", "batch": "budget.batch", "precision": "recipe.precision",
           "imgsz": "recipe.imgsz", "flops_reduction": "recipe.prune.flops_reduction",
           "prune_criterion": "recipe.prune.criterion", "prune_global_ranking": "recipe.prune.global_ranking",
           "prune_steps": "recipe.prune.steps", "finetune_epochs": "recipe.finetune.epochs",
           "distill_weight": "recipe.finetune.distill_weight", "distill_temperature": "recipe.finetune.distill_temperature",
           "calibration_images": "recipe.quantize.calibration_images", "max_map_drop": "recipe.quantize.max_map_drop",
           "guard_search_units": "recipe.quantize.guard_search_units", "qat_epochs": "recipe.quantize.qat_epochs"}
SECTIONS = {cls.__name__: cls for cls in (Hardware, Device, Budget, Validation, Emulation, Prune, Finetune,
                                          Quantize, Recipe)}


def _override(body: dict, overrides: dict) -> dict:
    """Apply overrides (short names or dotted paths; None: keep) to a profile's nested mapping."""
    for key, value in overrides.items():
        if value is None:
            continue
        path = OVERRIDES.get(key, key).split(".")
        node = body
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise EdgepruneError(f"override {key}: {part} is not a section", "override a key inside a section")
        node[path[-1]] = value
    return body


def target_from_dict(body: dict, where: str, **overrides) -> Target:
    """The one parser of a profile, from a yaml file or from a bundle's metadata.json: strict keys and types,
    sections into their dataclasses, overrides validated like the file."""
    if not isinstance(body, dict):
        raise EdgepruneError(f"{where}: expected a mapping of keys, got {type(body).__name__}",
                             "see targets/rpi.yaml for the expected shape")
    moved = {k: LAYERED[k] for k in body if k in LAYERED}
    if moved:
        raise EdgepruneError(f"{where}: flat key(s) {', '.join(moved)} from an older profile",
                             "move them into their sections: " + ", ".join(f"{k} -> {v}" for k, v in moved.items()))
    target = _parse(Target, body, where)  # the file itself is valid before any override replaces a value
    if overrides.get("flops_reduction") is not None:  # an explicit FLOPs goal replaces the budget goal
        overrides = {**overrides, "recipe.prune.goal": "flops"}
    if not any(v is not None for v in overrides.values()):
        return target
    return _parse(Target, _override(dataclasses.asdict(target), overrides), f"{where} with overrides")


def load_target(name: "str | Target", folder: Path = TARGETS_DIR, **overrides) -> Target:
    """Resolve TARGET=<name> to targets/<name>.yaml (or a path to a yaml) and validate it; a Target object
    gets the overrides (validated the same way)."""
    if isinstance(name, Target):
        return target_from_dict(dataclasses.asdict(name), f"target {name.name}", **overrides)
    path = Path(name) if name.endswith(".yaml") else folder / f"{name}.yaml"
    if not path.exists():
        raise EdgepruneError(f"unknown target {name!r}",
                             f"use one of: {', '.join(available_targets(folder))} (profiles live in targets/)")
    try:
        body = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise EdgepruneError(f"target profile {path} is not valid YAML ({error})", "fix its syntax") from None
    if not isinstance(body, dict):
        raise EdgepruneError(f"target profile {path}: expected a mapping of keys, got {type(body).__name__}",
                             "see targets/rpi.yaml for the expected shape")
    return target_from_dict({"name": path.stem, **body}, f"target profile {path}", **overrides)
