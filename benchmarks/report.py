"""Where every benchmark's result goes: `<out>/<name>.json` and `.md`, written atomically, the markdown printed."""

from __future__ import annotations

from pathlib import Path

from edgeprune.manifest import atomic_write_json, atomic_write_text


def publish(out: Path, name: str, result: dict, text: str) -> None:
    atomic_write_json(out / f"{name}.json", result)
    atomic_write_text(out / f"{name}.md", text)
    print(text)
