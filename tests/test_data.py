import json

import pytest

from edgeprune.data import synth
from edgeprune.data.build import build_synth
from edgeprune.data.dataset import load_dataset
from edgeprune.errors import EdgepruneError


def test_synth_is_deterministic_and_varied(tmp_path):
    cfg = dict(train=6, val=2, imgsz=96, seed=11)
    _, first = build_synth(tmp_path / "a", tmp_path / "a.yaml", **cfg)
    _, second = build_synth(tmp_path / "b", tmp_path / "b.yaml", **cfg)
    assert first == second
    _, other = build_synth(tmp_path / "c", tmp_path / "c.yaml", **{**cfg, "seed": 12})
    assert other != first


def test_synth_labels_are_valid_and_cover_scales(tiny_data):
    ds = load_dataset(tiny_data)
    assert ds.nc == len(synth.CLASS_NAMES) >= 6
    labels = [row for image in ds.train_images for row in ds.labels(image)]
    assert len(labels) >= 2 * len(ds.train_images), "several objects per image"
    widths = [w for _, _, _, w, _ in labels]
    assert min(widths) < 0.08 and max(widths) > 0.25, "small and large objects"
    assert len({c for c, *_ in labels}) >= 5


def test_coco_json_matches_yolo_labels(tiny_data):
    ds = load_dataset(tiny_data)
    coco = json.loads((ds.root / "annotations" / "instances_val.json").read_text())
    assert len(coco["images"]) == len(ds.val_images)
    n_yolo = sum(len(ds.labels(p)) for p in ds.val_images)
    assert len(coco["annotations"]) == n_yolo
    assert {c["id"] for c in coco["categories"]} == set(range(1, ds.nc + 1))


def _copy_dataset(tiny_data, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_data.parent / "synth", root)
    (tmp_path / "d.yaml").write_text(tiny_data.read_text().replace("path: synth", f"path: {root}"))
    return tmp_path / "d.yaml", root


@pytest.mark.parametrize("row, message", [
    ("7 0.5 0.5 0.1 0.1", "out of range"),
    ("1 0.5 0.5 0.1", "expected 5 numbers"),
    ("a 0.5 0.5 0.1 0.1", "not numeric"),
    ("1 1.5 0.5 0.1 0.1", "outside the image"),
])
def test_malformed_labels_are_refused_with_location(tiny_data, tmp_path, row, message):
    yaml_path, root = _copy_dataset(tiny_data, tmp_path)
    label = sorted((root / "labels" / "train").glob("*.txt"))[0]
    label.write_text(label.read_text() + row + "\n")
    with pytest.raises(EdgepruneError, match=message) as error:
        load_dataset(yaml_path)
    assert label.name in str(error.value) and "fix:" in str(error.value)


def test_missing_and_malformed_yaml(tmp_path):
    with pytest.raises(EdgepruneError, match="does not exist"):
        load_dataset(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(EdgepruneError, match="not valid YAML"):
        load_dataset(bad)
    bad.write_text("train: images/train\n")
    with pytest.raises(EdgepruneError, match="must be a mapping with"):
        load_dataset(bad)
    bad.write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a]\n")
    with pytest.raises(EdgepruneError, match="does not exist"):
        load_dataset(bad)
