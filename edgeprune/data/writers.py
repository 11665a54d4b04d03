"""Write detection splits in both formats users bring: Ultralytics YOLO text labels and COCO JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

Label = tuple[int, float, float, float, float]  # class, x_center, y_center, width, height (0..1)


def write_split(root: Path, split: str, samples: Iterable[tuple], names: Sequence[str], prefix: str) -> int:
    """Write images/<split>, labels/<split> and annotations/instances_<split>.json; return the count.

    A sample is (image, labels) — named `<prefix>_<index>.jpg`, id index + 1 — or (image, labels, origin)
    with origin {"file_name", "id"} of a source dataset, whose file stem and image id are kept, so every
    image and box can be traced back to its source.
    """
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": coco_categories(names)}
    count = 0
    for index, (image, labels, *origin) in enumerate(samples):
        stem = Path(origin[0]["file_name"]).stem if origin else f"{prefix}_{index:06d}"
        image.save(image_dir / f"{stem}.jpg", quality=92)
        (label_dir / f"{stem}.txt").write_text(format_labels(labels))
        add_coco_image(coco, origin[0]["id"] if origin else index + 1, f"{stem}.jpg", image.width, image.height,
                       labels)
        count += 1
    annotations = root / "annotations"
    annotations.mkdir(exist_ok=True)
    (annotations / f"instances_{split}.json").write_text(json.dumps(coco))
    return count


def format_labels(labels: Iterable[Label]) -> str:
    return "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)


def coco_categories(names: Sequence[str]) -> list[dict]:
    """Category ids are class index + 1, as COCO tools expect ids to start at 1."""
    return [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)]


def add_coco_image(coco: dict, image_id: int, file_name: str, width: int, height: int,
                   labels: Iterable[Label]) -> None:
    coco["images"].append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    for c, x, y, w, h in labels:
        bw, bh = w * width, h * height
        coco["annotations"].append({
            "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": int(c) + 1,
            "bbox": [round((x - w / 2) * width, 3), round((y - h / 2) * height, 3), round(bw, 3), round(bh, 3)],
            "area": round(bw * bh, 3), "iscrowd": 0,
        })


def write_dataset_yaml(path: Path, root: Path, names: Sequence[str], note: str = "") -> None:
    """A dataset yaml whose `path` is relative to the yaml's own folder (portable across clones)."""
    try:
        rel = root.resolve().relative_to(path.parent.resolve())
    except ValueError:
        rel = root.resolve()
    body = {"path": str(rel), "train": "images/train", "val": "images/val",
            "names": {i: n for i, n in enumerate(names)}}
    text = (f"# {note}\n" if note else "") + yaml.safe_dump(body, sort_keys=False)
    path.write_text(text)
