"""Target profiles: targets/<name>.yaml loaded into strict dataclasses (unknown keys are errors)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgeprune.paths import PACKAGE
from edgeprune.errors import EdgepruneError

TARGETS_DIR = PACKAGE / "profiles"  # `targets/` in the checkout points here
PRECISIONS = ("int8", "fp16", "fp32")


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

    def __post_init__(self):
        if self.outputs not in EMULATION_POLICIES:
            raise EdgepruneError(f"emulation outputs {self.outputs!r} is not one of {EMULATION_POLICIES}",
                                 "edit the target profile's emulation section")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    runtime: str
    artefact: str  # exporter name, e.g. "tflite"
    precision: str
    imgsz: int
    latency_budget_ms: float
    latency_percentile: int = 90
    batch: int = 1
    flops_reduction: float = 0.5  # pruning goal: fraction of FLOPs removed
    round_to: int = 8  # pruned channel counts are multiples of this (SIMD/tensor-core width)
    prune_criterion: str = "l2"  # l1 | l2 | bn | taylor (detection-loss gradients on train images) | random
    prune_global_ranking: bool = False  # rank channels across layers instead of one ratio per layer
    prune_steps: int = 1  # > 1: reach the FLOPs goal in this many cuts, fine-tuning finetune_epochs // steps between
    finetune_epochs: int = 12
    distill_weight: float = 0.0  # > 0: fine-tuning distils from the unpruned baseline with this weight
    distill_temperature: float = 2.0
    qat_epochs: int = 0  # > 0: when PTQ misses max_map_drop, fine-tune this many epochs through fake INT8 and retry
    calibration_images: int = 200
    max_map_drop: float = 0.01  # allowed mAP50-95 loss of the INT8 artefact vs its FP32 model
    guard_search_units: int = 6  # when every guard level misses: float at most this many blocks found by search
    hardware: Hardware = field(default_factory=Hardware)
    validation: Validation = field(default_factory=Validation)
    emulation: Emulation = field(default_factory=Emulation)

    def __post_init__(self):
        problems = []
        problems += _format_problems(self.artefact, self.runtime)
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.imgsz < 32 or self.imgsz % 32:
            problems.append(f"imgsz {self.imgsz} is not a positive multiple of 32 (the detector's largest stride)")
        minimums = {"finetune_epochs": 0, "calibration_images": 1, "batch": 1, "round_to": 1, "max_map_drop": 0,
                    "guard_search_units": 0}
        problems += [f"{key} {getattr(self, key)} must be >= {low}" for key, low in minimums.items()
                     if getattr(self, key) < low]
        if not self.latency_budget_ms > 0 or not 0 < self.latency_percentile <= 100:
            problems.append(f"latency_budget_ms {self.latency_budget_ms} must be > 0 and latency_percentile "
                            f"{self.latency_percentile} in (0, 100]")
        if self.validation.warmup < 0 or self.validation.runs < 1 or self.validation.threads < 1:
            problems.append(f"validation needs warmup >= 0, runs >= 1, threads >= 1 (got {self.validation})")
        if not 0 <= self.flops_reduction < 0.95:
            problems.append(f"flops_reduction {self.flops_reduction} must be in [0, 0.95)")
        from edgeprune.pruning.structured import CRITERIA  # here, so `import edgeprune.targets` stays light

        if self.prune_criterion not in CRITERIA:
            problems.append(f"prune_criterion {self.prune_criterion!r} is not one of {CRITERIA}")
        if self.prune_steps < 1:
            problems.append(f"prune_steps {self.prune_steps} must be >= 1 (1 is one-shot pruning)")
        if self.qat_epochs < 0:
            problems.append(f"qat_epochs {self.qat_epochs} must be >= 0 (0 turns quantization-aware fine-tuning off)")
        if self.distill_weight < 0 or self.distill_temperature <= 0:
            problems.append(f"distill_weight {self.distill_weight} must be >= 0 (0 turns distillation off) and "
                            f"distill_temperature {self.distill_temperature} > 0")
        if problems:
            raise EdgepruneError(f"target {self.name}: " + "; ".join(problems), f"edit targets/{self.name}.yaml")


def _format_problems(artefact: str, runtime: str) -> list[str]:
    """The artefact must be a registered format that deploys to the profile's runtime."""
    from edgeprune import formats

    if runtime not in formats.runtimes():
        return [f"runtime {runtime!r} is not one of {formats.runtimes()}"]
    try:
        fmt = formats.get(artefact, need_available=False)
    except EdgepruneError as error:
        return [error.problem]
    if fmt.caps.runtime != runtime:
        return [f"artefact {artefact!r} deploys to runtime {fmt.caps.runtime!r}, not {runtime!r}"]
    return []


def available_targets(folder: Path = TARGETS_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


SCALAR_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _strict(cls, values: dict, where: str):
    """Reject unknown keys and scalars of the wrong type (a quoted number, a list for a size) in one line."""
    if not isinstance(values, dict):
        raise EdgepruneError(f"{where}: expected a mapping of keys, got {type(values).__name__}",
                             "see targets/rpi.yaml for the expected shape")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise EdgepruneError(f"{where}: unknown key(s) {', '.join(unknown)}",
                             f"allowed keys are: {', '.join(sorted(fields))}")
    for key, value in values.items():
        allowed = SCALAR_TYPES.get(str(fields[key].type))
        if allowed and (not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool))):
            raise EdgepruneError(f"{where}: {key} is {value!r}, expected {fields[key].type}",
                                 f"write {key} as a plain {fields[key].type} value")
    return values


def load_target(name: "str | Target", folder: Path = TARGETS_DIR, **overrides) -> Target:
    """Resolve TARGET=<name> to targets/<name>.yaml (or a path to a yaml) and validate it; a Target object
    gets the overrides (validated the same way)."""
    if isinstance(name, Target):
        return dataclasses.replace(name, **{k: v for k, v in overrides.items() if v is not None})
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


SECTIONS = {"hardware": Hardware, "validation": Validation, "emulation": Emulation}


def target_from_dict(body: dict, where: str, **overrides) -> Target:
    """The one parser of a profile, from a yaml file or from a bundle's metadata.json: strict keys and types,
    sections into their dataclasses, overrides (None: keep) validated like the file."""
    body = dict(_strict(Target, body, where))
    for key, cls in SECTIONS.items():
        body[key] = cls(**_strict(cls, body.get(key) or {}, f"{where} ({key})"))
    body.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Target(**body)
    except TypeError as error:
        raise EdgepruneError(f"{where}: {error}", "add the missing key (see targets/rpi.yaml)") from None
