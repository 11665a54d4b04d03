"""Build the bundled dataset on demand, so `make deploy` works from a fresh clone without shipped images."""

from __future__ import annotations

from pathlib import Path

from edgeprune.data import synth
from edgeprune.data.dataset import Dataset, load_dataset
from edgeprune.data.writers import write_dataset_yaml
from edgeprune.paths import WORK_ROOT
from edgeprune.manifest import staged_dir

BUNDLED_YAML = WORK_ROOT / "datasets" / "synth.yaml"
NOTE = "Built by `edgeprune data synth` (deterministic, seed 0); `make deploy` builds it when missing."


def build_synth(out: Path, yaml_path: Path, **config) -> tuple[Path, str]:
    cfg = synth.SynthConfig(**config)
    with staged_dir(out) as partial:
        synth.generate(partial, cfg)
    digest = synth.dataset_hash(out)
    write_dataset_yaml(yaml_path, out, synth.CLASS_NAMES, note=NOTE)
    return yaml_path, digest


def ensure_dataset(yaml_path: str | Path) -> Dataset:
    """Load a dataset yaml; the bundled synthetic one is generated first if its images are absent."""
    yaml_path = Path(yaml_path)
    if yaml_path.resolve() == BUNDLED_YAML.resolve() and not (BUNDLED_YAML.parent / "synth" / "images").exists():
        print(f"building the bundled dataset into {BUNDLED_YAML.parent / 'synth'} ...")
        build_synth(BUNDLED_YAML.parent / "synth", BUNDLED_YAML)
    return load_dataset(yaml_path)
