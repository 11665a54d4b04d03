"""Exporters registered by name, each declaring what it can produce (a table, not an if-chain).

Every exporter shares one contract: `export(model, out, precision, calibration)` writes one
artefact atomically and returns its path; `available()` says whether this host can produce it,
so a missing optional backend disables one format with a reason instead of breaking the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch

from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class Capabilities:
    name: str
    suffix: str
    runtime: str  # runtime that runs the artefact (edgeprune.runtimes)
    precisions: tuple[str, ...]
    requires: tuple[str, ...]  # import names needed on the host
    description: str
    guard_levels: tuple[str, ...] = ("none",)  # float_scope values the INT8 accuracy guard may try, in order


class Exporter(Protocol):
    caps: Capabilities

    def export(self, model: torch.nn.Module, out: Path, imgsz: int, precision: str,
               calibration: np.ndarray | None) -> Path: ...


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


_REGISTRY: dict[str, Exporter] = {}
_MODULES = ("edgeprune.exporters.tflite", "edgeprune.exporters.onnx", "edgeprune.exporters.tensorrt",
            "edgeprune.exporters.coreml")


def register(exporter_cls):
    _REGISTRY[exporter_cls.caps.name] = exporter_cls()
    return exporter_cls


def _load_all() -> None:
    for name in _MODULES:
        importlib.import_module(name)


def available(caps: Capabilities) -> tuple[bool, str]:
    missing = [m for m in caps.requires if importlib.util.find_spec(m) is None]
    return (not missing, f"missing {', '.join(missing)}" if missing else "ok")


def all_exporters() -> list[Exporter]:
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_exporter(name: str) -> Exporter:
    _load_all()
    if name not in _REGISTRY:
        raise EdgepruneError(f"unknown export format {name!r}", f"use one of: {', '.join(sorted(_REGISTRY))}")
    exporter = _REGISTRY[name]
    ok, why = available(exporter.caps)
    if not ok:
        raise EdgepruneError(f"export format {name!r} is unavailable on this host: {why}",
                             "reinstall edgeprune's pinned dependencies: make setup (or pip install -c requirements.lock .)")
    return exporter


def describe(exporter: Exporter) -> str:
    caps = exporter.caps
    ok, why = available(caps)
    return (f"{caps.name:10s} {caps.suffix:9s} runtime={caps.runtime:12s} precisions={','.join(caps.precisions):15s} "
            f"{'available' if ok else 'unavailable (' + why + ')'} — {caps.description}")
