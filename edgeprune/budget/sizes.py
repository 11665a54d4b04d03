"""Candidate input sizes: the profile's list, capped by what the model was trained at (or the data's images).

A user's yolo11n.pt trained at 640 may be deployed at 640 or below, never silently at a size the
profile happens to list first; the bundled data's 256 px reaches the search through the model trained
on it (or, for a model yaml, through the images themselves), not through the device profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from edgeprune.data.dataset import Dataset
from edgeprune.targets import Target

STRIDE = 32


@dataclass(frozen=True)
class Sizes:
    candidates: tuple[int, ...]  # largest first
    why: str

    @property
    def largest(self) -> int:
        return self.candidates[0]


def trained_size(model) -> int | None:
    """The training image size a checkpoint records (Ultralytics' train_args.imgsz), if any."""
    args = getattr(model, "args", None)
    size = args.get("imgsz") if isinstance(args, dict) else getattr(args, "imgsz", None)
    if isinstance(size, (list, tuple)):
        size = max(size) if size else None
    return int(size) if isinstance(size, (int, float)) and size >= STRIDE else None


def data_size(dataset: Dataset, sample: int = 8) -> int:
    """The longest image side among the first train images, rounded down to the stride."""
    sides = [max(Image.open(p).size) for p in dataset.train_images[:sample]]
    return max(STRIDE, max(sides) // STRIDE * STRIDE)


def candidate_sizes(target: Target, dataset: Dataset, model=None) -> Sizes:
    """Fixed when the profile or --imgsz names one size; else the profile's candidates up to the model's size."""
    if target.recipe.imgsz:
        return Sizes((target.recipe.imgsz,), f"{target.recipe.imgsz} px fixed by recipe.imgsz / --imgsz")
    trained = trained_size(model) if model is not None else None
    if trained:
        bound, why = trained // STRIDE * STRIDE, f"the model was trained at {trained} px"
    else:
        top = max(target.recipe.imgsz_candidates)
        bound = min(top, data_size(dataset))
        why = f"the dataset's images are {data_size(dataset)} px (profile candidates up to {top})"
    sizes = sorted({s for s in target.recipe.imgsz_candidates if s <= bound} | {bound}, reverse=True)
    return Sizes(tuple(sizes), f"at most {bound} px: {why}")
