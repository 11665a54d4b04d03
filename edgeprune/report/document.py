"""A report as a list of blocks, rendered to Markdown (report.md) and to one self-contained HTML file.

Both files come from the same blocks, so they cannot say different things; the HTML inlines its
plots as data URIs, so it opens from a laptop's downloads folder or a CI artefact page as it is.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    file: str  # a file beside the report
    alt: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


def to_markdown(blocks: list) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            out += [block.text, ""]
        elif isinstance(block, Table):
            out += ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
            out += ["| " + " | ".join(row) + " |" for row in block.rows] + [""]
        elif isinstance(block, Image):
            out += [f"![{block.alt}]({block.file})", ""]
        elif isinstance(block, Bullets):
            out += [f"- {item}" for item in block.items] + [""]
    return "\n".join(out)


def _inline(text: str) -> str:
    """The Markdown the report itself writes inside cells and lines: **bold** and `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #eee;margin:.5em 0 1.5em}code{background:#f3f3f3;padding:0 .2em}"""


def to_html(blocks: list, folder: Path, title: str) -> str:
    """One HTML file; images are read from `folder` and embedded."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode((folder / block.file).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}">')
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
