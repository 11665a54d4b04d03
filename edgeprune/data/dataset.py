"""Load and check a dataset yaml (Ultralytics detection format) before any stage spends time on it.

Ultralytics skips malformed label rows with a warning and trains on the rest; a deployment tool
should refuse instead, naming the file and line, so a bad conversion never reaches a device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgeprune.errors import EdgepruneError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class Dataset:
    yaml_path: Path
    root: Path
    names: tuple[str, ...]
    train_images: tuple[Path, ...]
    val_images: tuple[Path, ...]

    @property
    def nc(self) -> int:
        return len(self.names)

    def label_path(self, image: Path) -> Path:
        """Ultralytics' rule: the last `images` folder in the path becomes `labels`, suffix .txt."""
        parts = list(image.parts)
        index = len(parts) - 1 - parts[::-1].index("images")
        parts[index] = "labels"
        return Path(*parts).with_suffix(".txt")

    def labels(self, image: Path) -> list[tuple[int, float, float, float, float]]:
        path = self.label_path(image)
        if not path.exists():
            return []  # an image without a label file is a negative (background) sample
        return parse_label_file(path, self.nc)

    def content_hash(self) -> str:
        """sha256 of every image and label (names and bytes): the data identity recorded in manifests."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.names).encode())
        for image in self.train_images + self.val_images:
            digest.update(str(image.relative_to(self.root)).encode())
            digest.update(image.read_bytes())
            label = self.label_path(image)
            if label.exists():
                digest.update(label.read_bytes())
        return digest.hexdigest()

    def ultralytics_yaml(self, out: Path) -> Path:
        """Write a copy with an absolute `path`, since Ultralytics resolves relative ones elsewhere."""
        body = {"path": str(self.root), "train": [str(p) for p in self._split_dirs("train")],
                "val": [str(p) for p in self._split_dirs("val")],
                "names": dict(enumerate(self.names))}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(body, sort_keys=False))
        return out

    def _split_dirs(self, split: str) -> list[Path]:
        images = self.train_images if split == "train" else self.val_images
        return sorted({p.parent for p in images})


def parse_label_file(path: Path, nc: int) -> list[tuple[int, float, float, float, float]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = line.split()
        if len(fields) != 5:
            raise EdgepruneError(
                f"malformed label row at {where}: expected 5 numbers 'class x y w h', got {len(fields)}",
                "rewrite the row in YOLO detection format (segmentation polygons are not supported)")
        try:
            cls, x, y, w, h = int(fields[0]), *map(float, fields[1:])
        except ValueError:
            raise EdgepruneError(f"malformed label row at {where}: {line.strip()!r} is not numeric",
                                 "labels are 'class x_center y_center width height', class an integer") from None
        if not 0 <= cls < nc:
            raise EdgepruneError(f"label class {cls} at {where} is out of range: the dataset yaml names {nc} classes",
                                 f"use class ids 0..{nc - 1} or add the missing names to the dataset yaml")
        if not (0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 and 0 < h <= 1):
            raise EdgepruneError(f"label box at {where} is outside the image: {line.strip()!r}",
                                 "coordinates must be normalised to 0..1 (divide pixels by image width/height)")
        rows.append((cls, x, y, w, h))
    return rows


def check_labels_present(dataset: Dataset) -> None:
    """Detection needs boxes: a split where no image has a label file is a wrong path, not background."""
    for split, images in (("train", dataset.train_images), ("val", dataset.val_images)):
        if not any(dataset.label_path(image).exists() for image in images):
            example = dataset.label_path(images[0])
            raise EdgepruneError(f"dataset {dataset.yaml_path}: none of the {len(images)} {split} images has a label "
                                 f"file (looked for e.g. {example})",
                                 "put YOLO label .txt files in the 'labels' folder beside 'images' "
                                 "(`edgeprune data coco-subset` converts COCO)")


def check_images(dataset: Dataset) -> None:
    """Decode every image now, so a truncated file fails here and not at calibration after training."""
    from PIL import Image, ImageFile

    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False  # a truncated file must fail
    try:
        for image in dataset.train_images + dataset.val_images:
            try:
                with Image.open(image) as opened:
                    opened.load()
            except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for broken files
                raise EdgepruneError(f"image {image} cannot be decoded ({error})",
                                     "re-copy or delete the file (and its label); the dataset must decode completely"
                                     ) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def _images(root: Path, entry, key: str, yaml_path: Path) -> tuple[Path, ...]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        path = Path(item) if Path(item).is_absolute() else root / item
        if path.is_dir():
            images += [p for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.suffix == ".txt" and path.exists():
            images += [(root / line.strip()).resolve() for line in path.read_text().splitlines() if line.strip()]
        else:
            raise EdgepruneError(f"dataset {yaml_path}: '{key}' points to {path}, which does not exist",
                                 "build the dataset first (see the comment at the top of the yaml) or fix the path")
    if not images:
        raise EdgepruneError(f"dataset {yaml_path}: '{key}' holds no images", "check the path and image suffixes")
    return tuple(images)


def load_dataset(yaml_path: str | Path, check_labels: bool = True) -> Dataset:
    """Parse, resolve and (by default) check every label of a dataset yaml."""
    yaml_path = Path(yaml_path)
    if not yaml_path.exists():
        raise EdgepruneError(f"dataset yaml {yaml_path} does not exist",
                             "pass DATA=datasets/<name>.yaml (see datasets/) or build one with `edgeprune data`")
    try:
        body = yaml.safe_load(yaml_path.read_text())
    except yaml.YAMLError as error:
        raise EdgepruneError(f"dataset yaml {yaml_path} is not valid YAML ({error.__class__.__name__})",
                             "fix the syntax; see datasets/synth.yaml for the expected shape") from None
    if not isinstance(body, dict) or not {"train", "val", "names"} <= set(body):
        raise EdgepruneError(f"dataset yaml {yaml_path} must be a mapping with 'train', 'val' and 'names'",
                             "see datasets/synth.yaml for the expected shape")
    names = body["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise EdgepruneError(f"dataset yaml {yaml_path}: 'names' keys must be 0..{len(names) - 1}",
                                 "number the classes contiguously from 0")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise EdgepruneError(f"dataset yaml {yaml_path}: 'names' must be a non-empty list or mapping",
                             "list the class names in order of their ids")
    root = Path(body.get("path") or ".")
    root = (root if root.is_absolute() else yaml_path.parent / root).resolve()
    dataset = Dataset(yaml_path, root, tuple(str(n) for n in names),
                      _images(root, body["train"], "train", yaml_path), _images(root, body["val"], "val", yaml_path))
    if check_labels:
        for image in dataset.train_images + dataset.val_images:
            dataset.labels(image)
    return dataset
