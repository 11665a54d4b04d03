"""A probe bundle: pruned variants of the user's own network, in the target's format, to time on the device.

Each variant keeps a random fraction of every top-level block's channels on the `round_to` grid (the
same pruning code and constraints deploy uses, so the variants are ones pruning can produce), at each
candidate input size, exported in the target's artefact format and precision (INT8 calibrated on the
dataset's images). probe.json lists every file with its sha256 and the features a latency model reads;
probe_latency.py (numpy + the runtime only) times them on the device and writes the table.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from edgeprune import formats
from edgeprune.errors import EdgepruneError
from edgeprune.latency.features import feature_names, latency_features
from edgeprune.manifest import atomic_write_json, scratch_dir, sha256_file
from edgeprune.paths import PACKAGE
from edgeprune.targets import Target

PROBE_FILE = "probe.json"
FORMAT_VERSION = 1
DEVICE_FILES = ("edgeprune_detector.py", "device_cli.py", "validation_common.py", "probe_latency.py")


@dataclass(frozen=True)
class ProbePlan:
    sizes: tuple[int, ...]
    variants: int = 12  # pruned variants per size; the unpruned model is added at every size
    max_ratio: float = 0.75  # a block loses at most this fraction of its channels
    seed: int = 0

    def __post_init__(self):
        if not self.sizes or any(s < 32 or s % 32 for s in self.sizes):
            raise EdgepruneError(f"probe sizes {self.sizes} must be positive multiples of 32", "pass e.g. --sizes 192,256")
        if self.variants < 0 or not 0 < self.max_ratio < 1:
            raise EdgepruneError(f"probe variants {self.variants} must be >= 0 and max_ratio {self.max_ratio} in (0, 1)",
                                 "pass --variants 12")


def random_variant(model: torch.nn.Module, imgsz: int, round_to: int, rng: np.random.Generator,
                   max_ratio: float) -> tuple[torch.nn.Module, dict[str, float]]:
    """A structurally pruned copy with an independent random ratio per top-level block (head included)."""
    from edgeprune.pruning.structured import PruneConfig, prune_at_ratio

    ratios = {f"model.{i}.": round(float(rng.uniform(0, max_ratio)), 3) for i in range(len(model.model))}
    cfg = PruneConfig(criterion="l1", round_to=round_to, imgsz=imgsz, overrides=tuple(ratios.items()))
    pruned, _ = prune_at_ratio(model, 0.0, cfg)
    return pruned, ratios


def build_probe(model: torch.nn.Module, target: Target, out: Path, plan: ProbePlan,
                calibration: dict[int, np.ndarray] | None = None, source: str = "") -> Path:
    """Write the probe bundle to `out` (replaced as a whole, never half-written); `calibration` per input size
    (INT8 formats only)."""
    fmt = formats.get(target.device.format)
    precision = target.recipe.precision
    if precision == "int8" and not calibration:
        raise EdgepruneError("an INT8 probe needs calibration images", "pass a dataset (--data) with train images")
    rng = np.random.default_rng(plan.seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records = []
    with scratch_dir("probe", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        for imgsz in plan.sizes:
            for index in range(plan.variants + 1):
                variant, ratios = ((model, {}) if index == 0 else
                                   random_variant(model, imgsz, target.device.round_to, rng, plan.max_ratio))
                name = f"v{len(records):03d}_{imgsz}"
                folder = staged / "models" / name
                folder.mkdir(parents=True)
                path = fmt.export(variant, folder / f"model_{precision}{fmt.caps.suffix}", imgsz, precision,
                                  (calibration or {}).get(imgsz), float_scope=fmt.timing_scope(precision))
                records.append({"name": name, "file": path.relative_to(staged).as_posix(), "sha256": sha256_file(path),
                                "imgsz": imgsz, "pruned": index > 0, "block_ratios": ratios,
                                "features": latency_features(variant, imgsz)})
                print(f"  probe {name}: {records[-1]['features']['gmacs_s8'] + records[-1]['features']['gmacs_s16']:.3f}"
                      f" GMACs at stride 8-16, {path.stat().st_size / 1e6:.2f} MB")
        for script in DEVICE_FILES:
            shutil.copy(PACKAGE / "device" / script, staged / script)
        manifest = {"format_version": FORMAT_VERSION, "kind": "edgeprune-latency-probe", "target": target.name,
                    "runtime": target.device.runtime, "format": fmt.caps.name, "precision": precision,
                    "float_scope": fmt.timing_scope(precision),
                    "threads": target.validation.threads, "percentile": target.budget.percentile,
                    "source_model": source, "plan": asdict(plan), "round_to": target.device.round_to,
                    "feature_names": feature_names(), "models": records}
        atomic_write_json(staged / PROBE_FILE, manifest)
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    return out


def probe_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def read_probe(folder: Path) -> dict:
    path = Path(folder) / PROBE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise EdgepruneError(f"no readable probe manifest at {path} ({error})",
                             "build it with: edgeprune latency probe --target <t> --out <folder>") from None
