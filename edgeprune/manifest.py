"""Atomic file writes, content hashes and the run manifest that records every stage.

A stage is skipped on re-run when its recorded config and input hashes match and its outputs
still exist with the recorded hashes; anything else re-runs it. Every file reaches its final
name through os.replace, so a crash never leaves a half-written artefact under that name.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from edgeprune.device.edgeprune_detector import atomic_write, sha256_path

TOOLS = ("edgeprune", "torch", "ultralytics", "torch-pruning", "onnx", "onnxruntime", "litert-torch",
         "ai-edge-litert", "ai-edge-quantizer", "numpy")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


@contextmanager
def staged_dir(final: Path):
    """Yield a temporary sibling folder that becomes `final` only if the block finishes."""
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)


SCRATCH_PREFIX = "edgeprune-"
LEFTOVERS = ("*.partial", f".{SCRATCH_PREFIX}*")  # staged_dir / atomic_write_* / scratch_dir names


def scratch_dir(kind: str, dir: Path | None = None) -> tempfile.TemporaryDirectory:
    """A temporary folder named after this process, so a later run can tell a killed run's leftovers from a live one's.

    Inside a run folder (`dir` given) it is hidden; in the system temp folder it is `edgeprune-<kind>-<pid>-…`.
    """
    hidden = "." if dir is not None else ""
    return tempfile.TemporaryDirectory(prefix=f"{hidden}{SCRATCH_PREFIX}{kind}-{os.getpid()}-", dir=dir)


def _owner_alive(path: Path) -> bool:
    parts = path.name.lstrip(".").split("-")
    if len(parts) < 4 or not parts[2].isdigit():
        return False  # not a scratch_dir name: an older layout's leftover
    pid = int(parts[2])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_leftovers(*folders: Path) -> list[Path]:
    """Remove what a killed run left: partial files and folders in `folders`, and dead processes' scratch folders.

    Called at the start of a run, so leftovers live at most until the next one. Returns what was removed.
    """
    removed = []
    candidates = [p for folder in folders if Path(folder).exists() for pattern in LEFTOVERS
                  for p in Path(folder).rglob(pattern)]
    candidates += Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*-*")
    for path in candidates:
        if not path.exists() or (path.name.lstrip(".").startswith(SCRATCH_PREFIX) and _owner_alive(path)):
            continue
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def sha256_file(path: Path) -> str:
    """sha256 of a file; a folder artefact (CoreML .mlpackage) hashes its sorted relative paths and file
    hashes. The device module's function, so bundle hashes are checked on the device by the code that wrote them."""
    return sha256_path(path)


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class Manifest:
    """`runs/<name>/manifest.json`: one entry per stage, rewritten atomically after each stage."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"stages": {}}
        self.data.setdefault("stages", {})

    def stage(self, name: str) -> dict | None:
        return self.data["stages"].get(name)

    def is_current(self, name: str, config: dict, inputs: dict[str, str]) -> bool:
        """True when the stage ran with this config and these input hashes and its outputs are intact."""
        entry = self.stage(name)
        if not entry or entry.get("config") != jsonable(config) or entry.get("inputs") != inputs:
            return False
        root = self.path.parent
        return all((root / rel).exists() and sha256_file(root / rel) == digest
                   for rel, digest in entry.get("outputs", {}).items())

    def record(self, name: str, config: dict, inputs: dict[str, str], outputs: list[Path],
               metrics: dict, wall_s: float) -> dict:
        root = self.path.parent
        entry = {"config": jsonable(config), "inputs": inputs,
                 "outputs": {str(Path(p).relative_to(root)): sha256_file(p) for p in outputs},
                 "metrics": metrics, "wall_s": round(wall_s, 2), "tools": tool_versions()}
        self.data["stages"][name] = entry
        self.save()
        return entry

    def set(self, key: str, value) -> None:
        self.data[key] = jsonable(value)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


def jsonable(value):
    """The value as it reads back from JSON (tuples become lists, paths strings), for comparisons."""
    return json.loads(json.dumps(value, default=str))
