"""dist/<target>/: the artefact, metadata.json, report and the run manifest, written as one unit.

The folder is assembled under a temporary name and renamed at the end, so a device never
receives a bundle whose model and metadata disagree.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from dataclasses import asdict
from pathlib import Path

from edgeprune.data.dataset import Dataset
from edgeprune.data.letterbox import PAD_VALUE
from edgeprune.evaluation.detection import IOU_THRESHOLD
from edgeprune.errors import EdgepruneError
from edgeprune.manifest import (Manifest, atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file,
                                staged_dir)
from edgeprune.report import write_report
from edgeprune.targets import Target, target_from_dict

DEPLOY_CONF = 0.25  # score threshold for live use (mAP is measured at 0.001)


def metadata(target: Target, dataset: Dataset, model_file: str, end2end: bool) -> dict:
    nc = len(dataset.names)
    return {
        "format_version": 1,
        "target": target.name, "runtime": target.device.runtime, "precision": target.recipe.precision,
        "model": model_file, "names": dict(enumerate(dataset.names)), "imgsz": target.recipe.imgsz, "end2end": end2end,
        "boxes_normalized": True,
        "input": {"name": "images", "shape": [target.budget.batch, 3, target.recipe.imgsz, target.recipe.imgsz], "layout": "NCHW",
                  "dtype": "float32", "color": "RGB", "scale": "pixel / 255 (0..1)",
                  "letterbox": {"pad_value": PAD_VALUE, "centered": True, "keep_aspect": True}},
        "output": ({"shape": [target.budget.batch, 300, 6], "layout": "x1 y1 x2 y2 score class; boxes / imgsz",
                    "nms": "none (end-to-end head)"} if end2end else
                   {"shape": [target.budget.batch, 4 + nc, "anchors"],
                    "layout": "rows 0-3: box centre x, y, width, height divided by imgsz; rows 4..: class scores "
                              "(sigmoid applied)", "nms": {"iou": IOU_THRESHOLD, "conf": DEPLOY_CONF,
                                                           "class_aware": True, "max_det": 300}}),
        "latency_budget": {"ms": target.budget.latency_ms, "percentile": target.budget.percentile},
    }


def _device_readme(target: Target, meta: dict, rows: list[dict]) -> str:
    art = rows[-1]
    return f"""# edgeprune bundle for `{target.name}`

{target.description}. Model: `{meta['model']}` ({target.recipe.precision}, {target.device.runtime}).

- Input: {meta['input']['shape']} float32 RGB in 0..1, letterboxed (grey {PAD_VALUE}, centred).
- Output: see `metadata.json` → `output` for the layout and NMS settings.
- Host-measured accuracy of this exact file: mAP50-95 {art['map50_95']:.3f}, mAP50 {art['map50']:.3f}
  on the validation split (see `report.md`, or `report.html` with the plots inline).
- Latency budget: p{target.budget.percentile} ≤ {target.budget.latency_ms} ms on the device.
- `metadata.json` lists the sha256 of every file; every `validate_*.py` (and the integrations) checks all of
  them before running anything and exits 3 if one is missing or changed.
"""


DEVICE_DIR = Path(str(resources.files("edgeprune.device")))  # package data: works from a wheel install too
SHARED_SCRIPTS = ("edgeprune_detector.py", "device_cli.py", "validation_common.py")


def device_scripts(runtime: str) -> list[Path]:
    """The numpy-only detector and the validation script(s) for this runtime, shipped in every bundle."""
    from edgeprune import formats

    return [DEVICE_DIR / name for name in SHARED_SCRIPTS + formats.for_runtime(runtime).caps.validation_scripts]


def target_from_metadata(meta: dict) -> Target:
    return target_from_dict(meta["target_profile"], "bundle metadata.json target_profile")


def _render(folder: Path, meta: dict) -> None:
    """(Re)write report, README and the sha256 list from metadata (bundle creation and `validate`)."""
    target = target_from_metadata(meta)
    write_report(folder, meta, target)
    atomic_write_text(folder / "README.md", _device_readme(target, meta, meta["report"]))
    meta["files"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
                     if p.name != "metadata.json" and not p.name.startswith(".")}
    atomic_write_json(folder / "metadata.json", meta)


def write_bundle(target: Target, dataset: Dataset, files: list[Path], artefact: Path, rows: list[dict],
                 manifest: Manifest, export_metrics: dict, out: Path, end2end: bool,
                 comparison: list[dict] | None = None, widths: dict | None = None,
                 budget_plan: dict | None = None) -> Path:
    with staged_dir(out) as folder:
        for path in files + device_scripts(target.device.runtime):
            if path.is_dir():
                shutil.copytree(path, folder / path.name)
            else:
                shutil.copy2(path, folder / path.name)
        shutil.copyfile(manifest.path, folder / "manifest.json")
        meta = metadata(target, dataset, artefact.name, end2end)
        guard = export_metrics.get("accuracy_guard")
        guard_note = [] if not guard else [
            f"INT8 accuracy guard (budget {guard['max_drop']:.3f} mAP50-95 vs the PyTorch FP32 model "
            f"{guard['reference_map50_95']:.3f}): kept float_scope={guard['chosen']} "
            f"({'within' if guard['within_budget'] else 'OVER'} budget); tried "
            + ", ".join(f"{t['float_scope']}: " + ("failed" if t["map50_95"] is None else f"{t['map50_95']:.4f}")
                        for t in guard["tried"]) + "."]
        meta["quantization"] = {"accuracy_guard": guard, "tensor_dtypes": export_metrics.get("tensor_dtypes"),
                                "io_dtypes": export_metrics.get("io_dtypes")}
        meta.update(report=rows, comparison=comparison or [], pruned_widths=widths or {}, budget_plan=budget_plan,
                    target_profile=asdict(target), device_results=[],
                    device_estimate=export_metrics.get("device_estimate"),
                    latency_prediction=export_metrics.get("latency_prediction"),
                    notes=[f"Evaluated on {dataset.yaml_path} val split with one protocol for every row (letterbox "
                           f"{target.recipe.imgsz}, conf 0.001, IoU {IOU_THRESHOLD}, pycocotools COCOeval).",
                           "Host latency: batch 1 on this machine's CPU; it compares stages, it is not the device "
                           "latency."] + guard_note)
        _render(folder, meta)
    return out


def add_device_results(bundle: Path, results_file: Path) -> dict:
    """Take a device script's JSON back into the bundle: check its schema and that it is for this model, then
    store it and re-render; a failure on the way leaves the bundle as it was (no stray unlisted file)."""
    from edgeprune.device_results import read_results

    try:
        meta = json.loads((bundle / "metadata.json").read_text())
        expected = meta["files"][meta["model"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EdgepruneError(f"{bundle}/metadata.json is not an edgeprune bundle's metadata "
                             f"({error.__class__.__name__})", "pass dist/<target> as written by `edgeprune deploy`"
                             ) from None
    results = read_results(results_file)
    if results["model_sha256"] != expected:
        raise EdgepruneError(f"device results {results_file} are for model sha256 {results['model_sha256'][:12]}, "
                             f"this bundle's {meta['model']} is {expected[:12]}",
                             "run the validate script of this bundle on the device and feed back its output")
    name = bundle / f"device_results_{len(meta['device_results']) + 1}.json"
    rendered = (".md", ".html", ".png", ".json")  # what _render rewrites
    before = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file() and p.suffix in rendered}
    try:
        atomic_write_json(name, results)
        meta["device_results"].append(results)
        _render(bundle, meta)
    except BaseException:
        name.unlink(missing_ok=True)
        for file_name, data in before.items():  # report, README and metadata as they were
            atomic_write_bytes(bundle / file_name, data)
        raise
    return results
