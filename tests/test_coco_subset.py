import json

import numpy as np
import pytest
from PIL import Image

from edgeprune.data.coco_subset import build_coco_subset
from edgeprune.data.dataset import load_dataset
from edgeprune.errors import EdgepruneError

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "toothbrush"}]


def _fake_coco(root, n_images=12):
    """Official COCO layout in miniature: category ids with gaps, crowd boxes, grayscale and empty images."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    for folder in ("train2017", "val2017"):
        (root / folder).mkdir()
        images, anns = [], []
        for i in range(1, n_images + 1):
            mode = "L" if i % 4 == 0 else "RGB"
            w, h = 120 + i, 90
            Image.fromarray(rng.integers(0, 255, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8),
                            mode).save(root / folder / f"{i:012d}.jpg")
            images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": w, "height": h})
            if i % 6 == 0:
                continue  # negative image
            cat = CATEGORIES[i % 3]["id"]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [10, 20, 30, 40],
                         "area": 1200, "iscrowd": 0})
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [0, 0, 50, 50],
                         "area": 2500, "iscrowd": 1})
        (root / "annotations" / f"instances_{folder}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return root


def test_coco_subset_maps_ids_drops_crowd_keeps_negatives(tmp_path):
    coco = _fake_coco(tmp_path / "coco")
    yaml_path, summary = build_coco_subset(coco, tmp_path / "out", tmp_path / "subset.yaml", per_class=3,
                                           negatives=0.2, val_per_class=2)
    ds = load_dataset(yaml_path)
    assert ds.names == ("person", "car", "toothbrush")
    rows = [r for p in ds.train_images for r in ds.labels(p)]
    assert {r[0] for r in rows} == {0, 1, 2}, "ids 1, 3, 90 become 0, 1, 2"
    assert all(30 / 133 <= r[3] <= 30 / 120 and abs(r[4] - 40 / 90) < 1e-5 for r in rows), "pixel boxes normalised"
    assert len(rows) == sum(1 for p in ds.train_images if ds.labels(p)), "crowd boxes dropped: one box per image"
    assert any(not ds.labels(p) for p in ds.train_images), "negatives kept"
    assert summary["train"] == len(ds.train_images)
    for p in ds.train_images:
        assert Image.open(p).mode == "RGB"
    coco_json = json.loads((ds.root / "annotations" / "instances_train.json").read_text())
    assert {c["name"] for c in coco_json["categories"]} == {"person", "car", "toothbrush"}


def test_coco_subset_class_choice_and_errors(tmp_path):
    coco = _fake_coco(tmp_path / "coco")
    yaml_path, _ = build_coco_subset(coco, tmp_path / "out", tmp_path / "s.yaml", per_class=2,
                                     classes=["toothbrush", "car"])
    assert load_dataset(yaml_path).names == ("toothbrush", "car")
    with pytest.raises(EdgepruneError, match="unknown COCO class"):
        build_coco_subset(coco, tmp_path / "o2", tmp_path / "s2.yaml", classes=["dragon"])
    with pytest.raises(EdgepruneError, match="annotations"):
        build_coco_subset(tmp_path / "missing", tmp_path / "o3", tmp_path / "s3.yaml")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists(), "no partial output"


def test_coco_subset_keeps_coco_names_ids_and_annotation_hash(tmp_path):
    import hashlib

    coco = _fake_coco(tmp_path / "coco")
    yaml_path, _ = build_coco_subset(coco, tmp_path / "out", tmp_path / "s.yaml", per_class=3, val_per_class=2)
    ds = load_dataset(yaml_path)
    sources = json.loads((ds.root / "sources.json").read_text())
    for split, images in (("train", ds.train_images), ("val", ds.val_images)):
        source = json.loads((coco / "annotations" / f"instances_{split}2017.json").read_text())
        by_name = {im["file_name"]: im["id"] for im in source["images"]}
        assert all(p.name in by_name for p in images), "COCO file names kept"
        written = json.loads((ds.root / "annotations" / f"instances_{split}.json").read_text())
        assert all(by_name[im["file_name"]] == im["id"] for im in written["images"]), "COCO image ids kept"
        assert sorted(sources[split]["coco_image_ids"]) == sorted(by_name[p.name] for p in images)
        digest = hashlib.sha256((coco / "annotations" / f"instances_{split}2017.json").read_bytes()).hexdigest()
        assert sources[split]["annotations_sha256"] == digest
