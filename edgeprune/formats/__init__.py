"""Artefact formats registered by name, each a package declaring the Format protocol (edgeprune.formats.base).

`get(name)` for a profile's `artefact`, `for_runtime(runtime)` for a profile's or bundle's runtime,
`load_runner(path)` to run a file on this host. Format packages import their heavy backends lazily,
so listing the registry costs nothing.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.formats.base import Capabilities, ExportCache, Format, Runner, Unit

__all__ = ["Capabilities", "ExportCache", "Format", "Runner", "Unit", "all_formats", "describe", "for_artefact",
           "for_runtime", "get", "load_runner", "register", "runtimes"]

PACKAGES = ("edgeprune.formats.tflite", "edgeprune.formats.onnx", "edgeprune.formats.tensorrt",
            "edgeprune.formats.coreml")
_REGISTRY: dict[str, Format] = {}


def register(format_cls):
    _REGISTRY[format_cls.caps.name] = format_cls()
    return format_cls


def _registry() -> dict[str, Format]:
    for name in PACKAGES:
        importlib.import_module(name)
    return _REGISTRY


def all_formats() -> list[Format]:
    registry = _registry()
    return [registry[k] for k in sorted(registry)]


def get(name: str, need_available: bool = True) -> Format:
    registry = _registry()
    if name not in registry:
        raise EdgepruneError(f"unknown export format {name!r}", f"use one of: {', '.join(sorted(registry))}")
    fmt = registry[name]
    ok, why = fmt.available()
    if need_available and not ok:
        raise EdgepruneError(f"export format {name!r} is unavailable on this host: {why}",
                             "reinstall edgeprune's pinned dependencies: make setup (or pip install -c requirements.lock .)")
    return fmt


def runtimes() -> tuple[str, ...]:
    """Device runtimes a profile may name: one per registered format."""
    return tuple(sorted(f.caps.runtime for f in _registry().values()))


def for_runtime(runtime: str) -> Format:
    for fmt in _registry().values():
        if fmt.caps.runtime == runtime:
            return fmt
    raise EdgepruneError(f"no format deploys to runtime {runtime!r}", f"use one of: {', '.join(runtimes())}")


def for_artefact(path: Path) -> Format:
    """The format that runs a file of this suffix on the host (a .onnx is plain ONNX whoever made it)."""
    matches = [f for f in all_formats() if f.caps.suffix == Path(path).suffix]
    runnable = [f for f in matches if f.caps.host_runtime] or matches
    if not runnable:
        suffixes = sorted({f.caps.suffix for f in all_formats()})
        raise EdgepruneError(f"no format reads {Path(path).name}", f"known suffixes: {', '.join(suffixes)}")
    return min(runnable, key=lambda f: f.caps.runtime != f.caps.host_runtime)  # plain onnx before tensorrt's


def load_runner(path: str | Path, threads: int = 2, imgsz: int | None = None, boxes_normalized: bool = True) -> Runner:
    """Run a file in its host runtime. `boxes_normalized=False` for files made by other tools (e.g.
    Ultralytics' ONNX, boxes in pixels)."""
    path = Path(path)
    return for_artefact(path).load_runner(path, threads=threads, imgsz=imgsz, boxes_normalized=boxes_normalized)


def describe(fmt: Format) -> str:
    caps = fmt.caps
    ok, why = fmt.available()
    host = caps.host_runtime or "proxy"
    return (f"{caps.name:10s} {caps.suffix:11s} device={caps.runtime:12s} host={host:12s} "
            f"precisions={','.join(caps.precisions):15s} "
            f"{'available' if ok else 'unavailable (' + why + ')'} — {caps.description}")
