"""One self-contained HTML page: figures embedded as base64 PNG, links to the SVG / PNG / CSV
files beside the page (relative paths), captions, tables, and notes for skipped sections.

A small inline script records, once the page has loaded, how many images decoded:
``<body data-images-loaded="12/12">`` (used by the browser test; harmless otherwise).
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class FigureItem:
    """A figure on the page: files on disk and the text around it."""

    title: str
    caption: str
    png: Path
    svg: Path
    csv: Path


@dataclass
class TableItem:
    """An HTML table (already formatted as strings) with a caption and its CSV."""

    title: str
    caption: str
    table: pd.DataFrame
    csv: Path | None = None
    cell_classes: pd.DataFrame | None = None
    #: per cell, a list of ``(text, href)`` links shown instead of the cell's text (or None)
    cell_links: pd.DataFrame | None = None


@dataclass
class Note:
    """A sentence on the page: ``skip`` (a figure was left out, and why), ``info``, or
    ``error`` (a section or figure failed; the report raises after writing the page)."""

    text: str
    kind: str = "skip"


@dataclass
class Section:
    """A numbered section of the report."""

    anchor: str
    title: str
    intro: str
    items: list[FigureItem | TableItem | Note] = field(default_factory=list)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#fafafa;line-height:1.45}
main{max-width:1500px;margin:0 auto;padding:1.5em 2em 4em}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2.2em}
.meta{color:#555;font-size:.92em}.meta td{padding:0 1.2em 0 0;vertical-align:top}
nav ol{columns:2;font-size:.95em}
figure{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:1.2em 0;padding:1em}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.92em;margin-top:.6em;color:#333}
.files{font-size:.85em;color:#666}.files a{margin-right:.8em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .9em;margin:.8em 0}
.info{background:#e8f1fb;border-left:4px solid #2d7ad6;padding:.5em .9em;margin:.8em 0}
.error{background:#fdecea;border-left:4px solid #c0392b;padding:.5em .9em;margin:.8em 0}
table.data{border-collapse:collapse;font-size:.85em;background:#fff;margin:.4em 0}
table.data th,table.data td{border:1px solid #ddd;padding:.25em .55em;text-align:left}
table.data th{background:#f0f0f0}
td.same{background:#fff}td.group{background:#d9f0d3}td.kind{background:#fff2b2}
td.unrelated{background:#f8c9c4}td.unjudged{background:#e6e6e6}
td.supported{background:#d9f0d3}td.contradicted{background:#f8c9c4}td.mixed{background:#fff2b2}
td.untestable{background:#e6e6e6}
.tablewrap{overflow-x:auto}
"""

SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
});
"""


def _rel(path: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(path, page_dir)).as_posix()


def _figure_html(item: FigureItem, page_dir: Path, embed: bool) -> str:
    e = html.escape
    if embed:
        data = base64.b64encode(item.png.read_bytes()).decode("ascii")
        src = f"data:image/png;base64,{data}"
    else:
        src = e(_rel(item.png, page_dir))
    links = " ".join(
        f'<a href="{e(_rel(p, page_dir))}">{label}</a>'
        for label, p in (("SVG", item.svg), ("PNG", item.png), ("data (CSV)", item.csv)))
    return (f'<figure><img src="{src}" alt="{e(item.title)}" loading="eager">'
            f"<figcaption><b>{e(item.title)}.</b> {e(item.caption)}"
            f'<div class="files">{links}</div></figcaption></figure>')


#: The CSS class of each kind of note.
NOTE_CLASSES = {"skip": "note", "info": "info", "error": "error"}


def _note_html(note: Note) -> str:
    return f'<p class="{NOTE_CLASSES.get(note.kind, "note")}">{html.escape(note.text)}</p>'


def _table_html(item: TableItem, page_dir: Path) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in item.table.columns)
    body = []
    for i, row in enumerate(item.table.itertuples(index=False)):
        cells = []
        for j, v in enumerate(row):
            cls = ""
            if item.cell_classes is not None:
                c = item.cell_classes.iat[i, j]
                cls = f' class="{e(str(c))}"' if c else ""
            links = item.cell_links.iat[i, j] if item.cell_links is not None else None
            text = (", ".join(f'<a href="{e(href)}">{e(label)}</a>' for label, href in links)
                    if links else e("" if v is None else str(v)))
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    link = (f'<div class="files"><a href="{e(_rel(item.csv, page_dir))}">data (CSV)</a></div>'
            if item.csv is not None else "")
    return (f"<h3>{e(item.title)}</h3><p>{e(item.caption)}</p>"
            f'<div class="tablewrap"><table class="data"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>{link}")


def render_page(title: str, meta: list[tuple[str, str]], notes: list[Note],
                sections: list[Section], page_dir: Path, embed: bool = True) -> str:
    """The HTML of the report page. ``meta`` is a list of (label, value) lines for the header;
    ``notes`` page-level notes; figures are embedded when ``embed`` (else referenced)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{e(title)}</h1>",
        '<table class="meta">' + "".join(
            f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in meta) + "</table>",
    ]
    parts += [_note_html(n) for n in notes]
    parts.append("<nav><ol>" + "".join(
        f'<li><a href="#{e(s.anchor)}">{e(s.title)}</a></li>' for s in sections) + "</ol></nav>")
    for i, s in enumerate(sections, 1):
        parts.append(f'<section id="{e(s.anchor)}"><h2>{i}. {e(s.title)}</h2>'
                     f"<p>{e(s.intro)}</p>")
        if not s.items:
            parts.append('<p class="note">Nothing to show in this section.</p>')
        for item in s.items:
            if isinstance(item, FigureItem):
                parts.append(_figure_html(item, page_dir, embed))
            elif isinstance(item, TableItem):
                parts.append(_table_html(item, page_dir))
            else:
                parts.append(_note_html(item))
        parts.append("</section>")
    parts.append(f"</main><script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)
