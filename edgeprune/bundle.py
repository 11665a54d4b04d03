"""dist/<target>/: the artefact, metadata.json, report and the run manifest, written as one unit.

The folder is assembled under a temporary name and renamed at the end, so a device never
receives a bundle whose model and metadata disagree.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from edgeprune.data.dataset import Dataset
from edgeprune.data.letterbox import PAD_VALUE
from edgeprune.evaluate.detection import IOU_THRESHOLD
from edgeprune.manifest import Manifest, atomic_write_json, atomic_write_text, sha256_file, staged_dir
from edgeprune.report import write_report
from edgeprune.targets import Target

DEPLOY_CONF = 0.25  # score threshold for live use (mAP is measured at 0.001)


def metadata(target: Target, dataset: Dataset, model_file: str, end2end: bool) -> dict:
    nc = len(dataset.names)
    return {
        "format_version": 1,
        "target": target.name, "runtime": target.runtime, "precision": target.precision,
        "model": model_file, "names": dict(enumerate(dataset.names)), "imgsz": target.imgsz, "end2end": end2end,
        "boxes_normalized": True,
        "input": {"name": "images", "shape": [target.batch, 3, target.imgsz, target.imgsz], "layout": "NCHW",
                  "dtype": "float32", "color": "RGB", "scale": "pixel / 255 (0..1)",
                  "letterbox": {"pad_value": PAD_VALUE, "centered": True, "keep_aspect": True}},
        "output": ({"shape": [target.batch, 300, 6], "layout": "x1 y1 x2 y2 score class; boxes / imgsz",
                    "nms": "none (end-to-end head)"} if end2end else
                   {"shape": [target.batch, 4 + nc, "anchors"],
                    "layout": "rows 0-3: box centre x, y, width, height divided by imgsz; rows 4..: class scores "
                              "(sigmoid applied)", "nms": {"iou": IOU_THRESHOLD, "conf": DEPLOY_CONF,
                                                           "class_aware": True, "max_det": 300}}),
        "latency_budget": {"ms": target.latency_budget_ms, "percentile": target.latency_percentile},
    }


def _device_readme(target: Target, meta: dict, rows: list[dict]) -> str:
    art = rows[-1]
    return f"""# edgeprune bundle for `{target.name}`

{target.description}. Model: `{meta['model']}` ({target.precision}, {target.runtime}).

- Input: {meta['input']['shape']} float32 RGB in 0..1, letterboxed (grey {PAD_VALUE}, centred).
- Output: see `metadata.json` → `output` for the layout and NMS settings.
- Host-measured accuracy of this exact file: mAP50-95 {art['map50_95']:.3f}, mAP50 {art['map50']:.3f}
  on the validation split (see `report.md`).
- Latency budget: p{target.latency_percentile} ≤ {target.latency_budget_ms} ms on the device.
- `metadata.json` lists the sha256 of every file; check it before running.
"""


def write_bundle(target: Target, dataset: Dataset, files: list[Path], artefact: Path, rows: list[dict],
                 manifest: Manifest, out: Path, end2end: bool) -> Path:
    with staged_dir(out) as folder:
        for path in files:
            shutil.copy2(path, folder / path.name)
        meta = metadata(target, dataset, artefact.name, end2end)
        notes = [f"Evaluated on {dataset.yaml_path} val split with one protocol for every row (letterbox "
                 f"{target.imgsz}, conf 0.001, IoU {IOU_THRESHOLD}, pycocotools COCOeval).",
                 "Host latency: batch 1 on this machine's CPU; it compares stages, it is not the device latency.",
                 f"Target profile: {asdict(target)}"]
        write_report(rows, target, folder, notes)
        atomic_write_text(folder / "README.md", _device_readme(target, meta, rows))
        shutil.copyfile(manifest.path, folder / "manifest.json")
        meta["files"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}
        meta["report"] = rows
        atomic_write_json(folder / "metadata.json", meta)
    return out
