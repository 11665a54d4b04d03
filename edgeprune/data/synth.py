"""Deterministic synthetic detection dataset: textured shapes on real-photo backgrounds.

Why synthetic: no COCO images can be fetched here, yet every stage needs a detection task that is
hard enough for pruning and INT8 losses to show. Shapes vary in scale (a few pixels to half the
image), rotation, colour and texture, overlap each other, and sit on random crops of the photos
that scikit-image ships, so the backgrounds are real clutter rather than flat colour.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from edgeprune.data.writers import write_split

CLASS_NAMES = ("circle", "square", "triangle", "star", "cross", "ring")
MIN_VISIBLE_FRACTION = 0.4  # an object hidden more than this by later ones is not labelled
SUPERSAMPLE = 4  # shapes are drawn larger and shrunk so small objects keep anti-aliased edges


@dataclass(frozen=True)
class SynthConfig:
    train: int = 640
    val: int = 160
    imgsz: int = 256
    seed: int = 0
    min_objects: int = 2
    max_objects: int = 9
    min_size: float = 0.03  # object size as a fraction of the image side
    max_size: float = 0.45


def background_images() -> list[np.ndarray]:
    """The photos scikit-image ships inside its wheel (no download), as RGB uint8 arrays."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    images = []
    for path in sorted(folder.glob("*")):
        if path.suffix.lower() not in {".png", ".jpg", ".jpeg"}:
            continue
        array = np.asarray(Image.open(path).convert("RGB"))
        if min(array.shape[:2]) >= 128:
            images.append(array)
    if not images:
        raise RuntimeError(f"no background photos found in {folder}; is scikit-image installed?")
    return images


def _background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> Image.Image:
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(rng.uniform(0.3, 1.0) * min(h, w))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    array = np.asarray(crop, dtype=np.float32)
    array = array * rng.uniform(0.6, 1.3) + rng.uniform(-30, 30, size=3)  # brightness + colour cast
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _polygon(cx: float, cy: float, radii: list[float], angle: float) -> list[tuple[float, float]]:
    n = len(radii)
    return [
        (cx + r * math.cos(angle + 2 * math.pi * i / n), cy + r * math.sin(angle + 2 * math.pi * i / n))
        for i, r in enumerate(radii)
    ]


def _shape_mask(cls: int, size: int, rng: np.random.Generator) -> Image.Image:
    """A binary mask (mode 'L') of one shape filling a size x size box, drawn supersampled."""
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    c, r = big / 2, big / 2 * 0.98
    angle = rng.uniform(0, 2 * math.pi)
    name = CLASS_NAMES[cls]
    if name == "circle":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
    elif name == "square":
        draw.polygon(_polygon(c, c, [r] * 4, angle), fill=255)
    elif name == "triangle":
        draw.polygon(_polygon(c, c, [r] * 3, angle), fill=255)
    elif name == "star":
        draw.polygon(_polygon(c, c, [r, r * 0.42] * 5, angle), fill=255)
    elif name == "cross":
        arm = r * 0.33
        for a in (angle, angle + math.pi / 2):
            dx, dy = math.cos(a), math.sin(a)
            px, py = -dy * arm, dx * arm
            draw.polygon([(c - dx * r + px, c - dy * r + py), (c + dx * r + px, c + dy * r + py),
                          (c + dx * r - px, c + dy * r - py), (c - dx * r - px, c - dy * r - py)], fill=255)
    elif name == "ring":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
        inner = r * rng.uniform(0.45, 0.65)
        draw.ellipse([c - inner, c - inner, c + inner, c + inner], fill=0)
    return mask.resize((size, size), Image.LANCZOS)


def _texture(size: int, rng: np.random.Generator) -> Image.Image:
    """Fill for a shape: solid, gradient, stripes or noise, in random colours."""
    a, b = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    if kind == 0:
        t = np.zeros((size, size), np.float32)
    elif kind == 1:
        theta = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(theta) + yy * math.sin(theta)) % 1.0
    elif kind == 2:
        period = rng.uniform(0.15, 0.5)
        t = ((xx + yy * rng.uniform(-1, 1)) / period % 1.0 > 0.5).astype(np.float32)
    else:
        t = rng.random((size, size)).astype(np.float32)
    pixels = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    return Image.fromarray(pixels.astype(np.uint8))


def render_image(rng: np.random.Generator, photos: list[np.ndarray], cfg: SynthConfig):
    """One image and its labels as (class, x_center, y_center, width, height) normalised rows."""
    size = cfg.imgsz
    image = _background(rng, photos, size)
    owner = np.full((size, size), -1, np.int32)  # which object each pixel finally shows
    objects = []
    for index in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        cls = int(rng.integers(len(CLASS_NAMES)))
        side = int(size * math.exp(rng.uniform(math.log(cfg.min_size), math.log(cfg.max_size))))
        side = max(side, 6)
        x0 = int(rng.integers(-side // 4, size - side + side // 4 + 1))
        y0 = int(rng.integers(-side // 4, size - side + side // 4 + 1))
        mask = _shape_mask(cls, side, rng)
        image.paste(_texture(side, rng), (x0, y0), mask)
        full = np.zeros((size, size), bool)
        m = np.asarray(mask) > 127
        ys, xs = slice(max(y0, 0), min(y0 + side, size)), slice(max(x0, 0), min(x0 + side, size))
        full[ys, xs] = m[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        owner[full] = index
        objects.append((cls, int(m.sum())))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    pixels = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(0, 8), (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    labels = []
    for index, (cls, area) in enumerate(objects):
        visible = owner == index
        count = int(visible.sum())
        if area == 0 or count < MIN_VISIBLE_FRACTION * area or count < 12:
            continue
        ys, xs = np.nonzero(visible)
        x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        labels.append((cls, (x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size))
    return image, labels


def generate(out_dir: Path, cfg: SynthConfig = SynthConfig()) -> str:
    """Write the dataset (YOLO labels + COCO JSON) under out_dir and return its content hash."""
    photos = background_images()
    root = np.random.SeedSequence(cfg.seed)
    split_seeds = dict(zip(("train", "val"), root.spawn(2)))
    for split, count in (("train", cfg.train), ("val", cfg.val)):
        rng = np.random.default_rng(split_seeds[split])
        samples = (render_image(rng, photos, cfg) for _ in range(count))
        write_split(out_dir, split, samples, CLASS_NAMES, prefix=f"synth_{split}")
    return dataset_hash(out_dir)


def dataset_hash(root: Path) -> str:
    """sha256 over every image and label file (names and bytes), stable across machines."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".jpg", ".png", ".txt"}):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
