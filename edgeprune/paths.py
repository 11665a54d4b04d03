"""Where edgeprune reads its own files and where it writes a run's.

Read-only package data (profiles, the shipped baseline, the device files) lives inside the package, so a
wheel install has it too. Working files (runs/, dist/, the generated bundled dataset, caches) go to the
source tree when edgeprune runs from a checkout (the Makefile flow), else to the current directory.
"""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE.parent  # the checkout, when there is one
IN_SOURCE_TREE = (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "targets").exists()
WORK_ROOT = PROJECT_ROOT if IN_SOURCE_TREE else Path.cwd()
