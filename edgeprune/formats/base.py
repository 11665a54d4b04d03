"""The protocol every artefact format declares, so the rest of edgeprune never reads a format's internals.

A format is one package (edgeprune/formats/<name>/) holding everything about its artefact: export
(FP32 and its own INT8), the regex that names a float unit in its graph, how to run the file on this
host, and what to check in a finished file. The INT8 guard, the sensitivity search, the evaluator,
the bundle writer and the roofline read only these declarations; a table keyed by runtime name does
not exist anywhere else on the host.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Capabilities:
    name: str  # the profile's `artefact`, e.g. "tflite"
    suffix: str
    runtime: str  # the profile's `runtime` on the device, e.g. "tflite", "tensorrt"
    precisions: tuple[str, ...]
    requires: tuple[str, ...]  # import names needed on the host to export
    description: str
    guard_levels: tuple[str, ...] = ("none",)  # float_scope values the INT8 accuracy guard may try, in order
    host_runtime: str | None = None  # what runs the file on this host; None: a labelled proxy is measured
    validation_scripts: tuple[str, ...] = ()  # device/ scripts a bundle of this format carries
    emulation_script: str | None = None  # the script `edgeprune emulate` runs under qemu; None: not emulated
    roofline_utilisation: float = 0.25  # achievable fraction of peak for a batch-1 nano detector (rough)
    roofline_overhead_ms: float = 0.3  # fixed per-inference cost the roofline adds


@dataclass(frozen=True)
class Unit:
    """A part of the network the INT8 guard may keep in float: a top-level block, or one head scale."""
    block: int  # index into model.model
    scale: int | None = None  # head only: that scale's box and class branches (cv2.k, cv3.k, one2one_*)

    @property
    def name(self) -> str:
        return f"model.{self.block}" if self.scale is None else f"model.{self.block}.scale{self.scale}"


@dataclass
class Runner:
    """Takes a float32 NCHW batch in 0..1, returns the raw output with boxes in input pixels."""
    run: Callable[[np.ndarray], np.ndarray]
    runtime: str
    path: Path
    input_dtype: str
    output_dtype: str


T = TypeVar("T")


class ExportCache:
    """Intermediate results that the INT8 guard's candidates share: one FP32 conversion, one calibration.

    `get(key, build)` calls `build(path)` once per key, with a fresh path inside the cache folder
    for whatever file it writes, and returns its result every later time."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._items: dict[str, object] = {}

    def get(self, key: str, build: Callable[[Path], T]) -> T:
        if key not in self._items:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._items[key] = build(self.folder / key)
        return self._items[key]


class Format:
    """Defaults for the optional parts of the protocol; a format overrides what it offers."""

    caps: Capabilities

    def export(self, model: "torch.nn.Module", out: Path, imgsz: int, precision: str,
               calibration: np.ndarray | None = None, *, float_scope: str = "none", float_units: tuple = (),
               cache: ExportCache | None = None) -> Path:
        """Write one artefact atomically and return its path. `float_scope` (one of caps.guard_levels) and
        `float_units` say what INT8 keeps in float; `cache` shares work between the guard's candidates."""
        raise NotImplementedError

    def timing_scope(self, precision: str) -> str:
        """The float scope a latency probe or a budget plan times INT8 at: the guard's last level, which floats a
        superset of every earlier one (only its per-block search floats more), so no guard level is timed short."""
        return self.caps.guard_levels[-1] if precision == "int8" else "none"

    def unit_pattern(self, unit: Unit) -> str:
        """Regex naming `unit`'s ops in this format's graph (the guard floats what it matches)."""
        raise EdgepruneError(f"{self.caps.name} export cannot keep single blocks in float",
                             "set guard_search_units: 0 in the target profile")

    def load_runner(self, path: Path, threads: int = 2, imgsz: int | None = None,
                    boxes_normalized: bool = True) -> Runner:
        raise EdgepruneError(f"{path.name} ({self.caps.name}) cannot run on this host",
                             "measure its labelled proxy (edgeprune.evaluate) or run the bundle on the device")

    def host_proxy(self, model: "torch.nn.Module") -> "torch.nn.Module | None":
        """A PyTorch stand-in measured when the file cannot run here (labelled a proxy); None: none needed."""
        return None

    def inspect(self, path: Path) -> dict:
        """Static facts of a finished file stored with its metrics (dtypes, op census, deployment checks)."""
        return {}

    def check_precision(self, precision: str) -> None:
        if precision not in self.caps.precisions:
            raise EdgepruneError(f"{self.caps.name} export does not support precision {precision!r}",
                                 f"use one of: {', '.join(self.caps.precisions)}")

    def available(self) -> tuple[bool, str]:
        missing = [m for m in self.caps.requires if importlib.util.find_spec(m) is None]
        return (not missing, f"missing {', '.join(missing)}" if missing else "ok")
