"""Make Ultralytics run offline and use both CPU cores; must run before `ultralytics` is imported.

Ultralytics otherwise tries to download fonts, weights and datasets, auto-installs packages, and
trains with cores - 1 threads (one thread on a 2-core machine). Importing this module configures
the process, so every edgeprune module that imports Ultralytics imports this one first — and only
those: `import edgeprune` itself changes nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgeprune.paths import WORK_ROOT
CONFIG_DIR = Path(os.environ.get("EDGEPRUNE_CACHE", WORK_ROOT / ".cache")) / "ultralytics"


def _install_font(config_dir: Path) -> None:
    """Ultralytics' plots want Arial.ttf and download it when absent; matplotlib ships DejaVu."""
    target = config_dir / "Arial.ttf"
    if target.exists():
        return
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        shutil.copyfile(source, config_dir / name)


def configure() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(CONFIG_DIR))
    threads = str(os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    _install_font(Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics")
    _install_font(Path(os.environ["YOLO_CONFIG_DIR"]))


configure()
