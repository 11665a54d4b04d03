"""The package's floors: every import (lazy ones included) points down, and every format keeps its contract."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune import formats
from edgeprune.paths import PACKAGE

# Lowest floor first; a room may import only rooms on floors below its own.
FLOORS = (
    {"device"},
    {"errors", "paths"},
    {"manifest", "env", "device_results"},
    {"data", "models"},
    {"formats"},
    {"evaluation"},
    {"pruning", "quantize"},
    {"training"},
    {"targets"},
    {"latency"},
    {"budget"},
    {"emulate", "report", "detector"},
    {"bundle", "preflight"},
    {"stages"},
    {"pipeline"},
    {"api"},
    {"cli", "__init__"},
)
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_arrows() -> set[tuple[str, str, str]]:
    """(importing file, from room, to room) for every edgeprune import in the package's sources."""
    arrows = set()
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        source = _room(module)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + ([f"edgeprune.{a.name}" for a in node.names] if node.module == "edgeprune" else [])
            for name in names:
                if name.startswith("edgeprune.") and _room(name) != source:
                    arrows.add((str(path.relative_to(PACKAGE)), source, _room(name)))
    return arrows


def test_every_room_has_a_floor():
    rooms = {_room(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"))
             for p in PACKAGE.rglob("*.py")}
    assert rooms <= set(FLOOR), f"place these in FLOORS: {sorted(rooms - set(FLOOR))}"


def test_no_import_runs_back_up():
    upward = sorted(f"{where}: {a} -> {b}" for where, a, b in import_arrows() if FLOOR[b] >= FLOOR[a])
    assert not upward, "imports that run up or sideways:\n" + "\n".join(upward)


def test_device_package_needs_nothing_from_edgeprune():
    assert not [a for a in import_arrows() if a[1] == "device"], "bundles copy edgeprune/device/ alone"


def test_format_declarations_are_complete():
    device_dir = PACKAGE / "device"
    registered = formats.all_formats()
    assert {f.caps.name for f in registered} == {"coreml", "onnx", "tensorrt", "tflite"}
    assert len(formats.runtimes()) == len(registered), "one format per device runtime"
    for fmt in registered:
        caps = fmt.caps
        assert caps.suffix.startswith(".") and caps.precisions and caps.guard_levels[0] == "none"
        assert caps.validation_scripts and all((device_dir / s).exists() for s in caps.validation_scripts)
        assert caps.emulation_script in (None, *caps.validation_scripts)
        assert 0 < caps.roofline_utilisation <= 1 and caps.roofline_overhead_ms >= 0
        assert formats.for_runtime(caps.runtime) is fmt


@pytest.mark.slow
@pytest.mark.parametrize("name", ["coreml", "onnx", "tensorrt", "tflite"])
def test_every_format_exports_runs_and_inspects_a_tiny_model(tiny_model, name, tmp_path):
    """The protocol end to end: export, run here (or build the labelled proxy), inspect; INT8 with one unit in
    float where the format offers the guard."""
    from edgeprune.formats.graph import denormalize, deploy_graph
    from edgeprune.quantize.sensitivity import float_units

    fmt = formats.get(name)
    if not fmt.available()[0]:
        pytest.skip(fmt.available()[1])
    imgsz = 64
    calib = np.random.default_rng(0).random((4, 3, imgsz, imgsz), dtype=np.float32)
    precision = "int8" if "int8" in fmt.caps.precisions else fmt.caps.precisions[0]
    tunable = len(fmt.caps.guard_levels) > 1
    units = tuple(float_units(tiny_model)[:1]) if tunable else ()
    out = fmt.export(tiny_model, tmp_path / f"model_{precision}{fmt.caps.suffix}", imgsz, precision, calib,
                     float_scope=fmt.caps.guard_levels[1] if tunable else "none", float_units=units)
    assert out.exists() and isinstance(fmt.inspect(out), dict) and fmt.inspect(out)
    with torch.inference_mode():
        reference = denormalize(deploy_graph(tiny_model, imgsz)(torch.from_numpy(calib[:1])).numpy(), imgsz)
    if fmt.caps.host_runtime:
        runner = fmt.load_runner(out, threads=1, imgsz=imgsz)
        assert runner.run(calib[:1]).shape == reference.shape
    else:
        assert isinstance(fmt.host_proxy(tiny_model), torch.nn.Module)
        with pytest.raises(Exception, match="cannot run on this host"):
            fmt.load_runner(out)
    for unit in units:
        assert fmt.unit_pattern(unit)


def test_a_profile_whose_artefact_and_runtime_disagree_is_refused(tmp_path):
    from edgeprune.errors import EdgepruneError
    from edgeprune.targets import load_target

    body = (PACKAGE / "profiles" / "rpi.yaml").read_text().replace("format: tflite", "format: coreml")
    (tmp_path / "bad.yaml").write_text(body)
    with pytest.raises(EdgepruneError, match="format 'coreml' deploys to runtime 'coreml', not 'tflite'"):
        load_target(str(tmp_path / "bad.yaml"))
