"""Class-balanced subset of the official COCO layout, written like the synthetic set (YOLO + COCO JSON).

Expects `annotations/instances_{train,val}2017.json` and `train2017/`, `val2017/` image folders.
COCO's category ids (1..90 with gaps) become contiguous class indices in the order of the
kept categories; `iscrowd` boxes are dropped (COCO evaluation ignores them too); a fraction of
images without any kept object is kept as negatives; grayscale images are converted to RGB.
Images keep their COCO file names and image ids, and `sources.json` records the annotation files'
sha256, so a bad label or a failure case can be traced back to COCO.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from edgeprune.data.writers import write_dataset_yaml, write_split
from edgeprune.errors import EdgepruneError
from edgeprune.manifest import atomic_write_json, sha256_file, staged_dir

SPLITS = {"train": "train2017", "val": "val2017"}
SOURCES_NOTE = ("images keep their COCO file names and, in annotations/instances_<split>.json, their COCO image "
                "ids; annotations_sha256 identifies the COCO annotation file each split was cut from")


def _annotation_file(coco_root: Path, folder: str) -> Path:
    return coco_root / "annotations" / f"instances_{folder}.json"


def _load_annotations(coco_root: Path, folder: str) -> dict:
    path = _annotation_file(coco_root, folder)
    if not path.exists():
        raise EdgepruneError(f"COCO annotations {path} not found",
                             "point --coco-root at the folder holding annotations/ and train2017/ val2017/")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise EdgepruneError(f"COCO annotations {path} are not valid JSON ({error.msg})",
                             "re-extract annotations_trainval2017.zip") from None


def _categories(coco: dict, wanted: list[str] | None) -> list[dict]:
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    if not wanted:
        return cats
    by_name = {c["name"]: c for c in cats}
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise EdgepruneError(f"unknown COCO class name(s): {', '.join(unknown)}",
                             f"choose from: {', '.join(c['name'] for c in cats)}")
    return [by_name[w] for w in wanted]


def select_images(coco: dict, cat_ids: list[int], per_class: int, negatives: float,
                  rng: np.random.Generator) -> list[int]:
    """Up to per_class images for every class (rarest classes first), plus negatives."""
    by_image: dict[int, set[int]] = {}
    for ann in coco["annotations"]:
        if not ann.get("iscrowd", 0) and ann["category_id"] in cat_ids:
            by_image.setdefault(ann["image_id"], set()).add(ann["category_id"])
    counts = {c: 0 for c in cat_ids}
    chosen: list[int] = []
    taken: set[int] = set()
    for cat in sorted(cat_ids, key=lambda c: sum(c in s for s in by_image.values())):
        candidates = [i for i, cs in by_image.items() if cat in cs and i not in taken]
        rng.shuffle(candidates)
        for image_id in candidates:
            if counts[cat] >= per_class:
                break
            chosen.append(image_id)
            taken.add(image_id)
            for c in by_image[image_id]:
                counts[c] += 1
    empty = [im["id"] for im in coco["images"] if im["id"] not in by_image]
    rng.shuffle(empty)
    chosen += empty[: int(round(negatives * len(chosen)))]
    return chosen


def _samples(coco: dict, image_dir: Path, image_ids: list[int], index_of: dict[int, int]):
    images = {im["id"]: im for im in coco["images"]}
    anns: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    for image_id in image_ids:
        info = images[image_id]
        path = image_dir / info["file_name"]
        if not path.exists():
            raise EdgepruneError(f"COCO image {path} is missing", "check the image folders are fully extracted")
        image = Image.open(path).convert("RGB")  # COCO has grayscale and CMYK images
        w, h = image.size
        labels = []
        for ann in anns.get(image_id, []):
            if ann.get("iscrowd", 0) or ann["category_id"] not in index_of:
                continue
            x, y, bw, bh = ann["bbox"]
            x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            labels.append((index_of[ann["category_id"]], (x1 + x2) / 2 / w, (y1 + y2) / 2 / h,
                           (x2 - x1) / w, (y2 - y1) / h))
        yield image, labels, {"file_name": info["file_name"], "id": image_id}


def build_coco_subset(coco_root: Path, out: Path, yaml_path: Path, per_class: int = 50,
                      classes: list[str] | None = None, negatives: float = 0.05, seed: int = 0,
                      val_per_class: int | None = None) -> tuple[Path, dict]:
    rng = np.random.default_rng(seed)
    summary, sources = {}, {}
    names: list[str] = []
    with staged_dir(out) as partial:
        for split, folder in SPLITS.items():
            coco = _load_annotations(coco_root, folder)
            cats = _categories(coco, classes)
            names = [c["name"] for c in cats]
            index_of = {c["id"]: i for i, c in enumerate(cats)}
            count = per_class if split == "train" else (val_per_class or max(1, per_class // 5))
            ids = select_images(coco, list(index_of), count, negatives, rng)
            written = write_split(partial, split, _samples(coco, coco_root / folder, ids, index_of), names,
                                  prefix=f"coco_{split}")
            summary[split] = written
            annotations = _annotation_file(coco_root, folder)
            sources[split] = {"annotations": str(annotations), "annotations_sha256": sha256_file(annotations),
                              "image_folder": str(coco_root / folder), "coco_image_ids": ids}
        atomic_write_json(partial / "classes.json", {"names": names, "coco_category_ids": [
            c["id"] for c in _categories(_load_annotations(coco_root, SPLITS["val"]), classes)]})
        atomic_write_json(partial / "sources.json", {"seed": seed, "per_class": per_class, "negatives": negatives,
                                                     "note": SOURCES_NOTE, **sources})
    write_dataset_yaml(yaml_path, out, names, note=f"Built by `edgeprune data coco-subset --coco-root {coco_root}`")
    return yaml_path, summary
