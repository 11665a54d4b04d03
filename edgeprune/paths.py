"""Where the source tree is: profiles, baselines and the bundled dataset recipe are read from here."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
