"""The report as one self-contained HTML page: figures embedded as data URIs, no server, no
network. A few lines of script mark on ``<body>`` how many images decoded, so a headless
browser (and the tests) can tell the page rendered completely."""

from __future__ import annotations

import base64
from html import escape
from typing import TYPE_CHECKING

from robustlab.experiments.tables import Table

if TYPE_CHECKING:
    from robustlab.experiments.document import Report

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6em 0 0.3em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
p.note { font-size: 0.85em; color: #555; margin-top: 0; }
figure { margin: 1em 0; } img { max-width: 100%; }
.verdict { background: #f4f7fb; border-left: 4px solid #1f77b4; padding: 0.5em 0.8em; }
"""

SELF_CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-loaded", String(decoded.length));
});
"""


def html_table(table: Table) -> str:
    head = "".join(f"<th>{escape(column)}</th>" for column in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows
    )
    note = f'<p class="note">{escape(table.note)}</p>' if table.note else ""
    return (
        f"<table><caption>{escape(table.title)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>{note}"
    )


def html_figure(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{escape(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(name)}</figcaption></figure>"
    )


def render_page(report: Report) -> str:
    parts = [f"<h1>{escape(report.title)}</h1>"]
    parts += [f"<p>{escape(text)}</p>" for text in report.paragraphs]
    for section in report.all_sections:
        parts.append(f"<h2>{escape(section.heading)}</h2>")
        parts += [html_table(table) for table in section.tables]
        parts += [
            f'<p class="verdict"><b>{escape(callout.lead)}</b> {escape(callout.text)}</p>'
            for callout in section.callouts
        ]
        parts += [html_figure(name, png) for name, png in section.figures.items()]
    if report.missing:
        parts.append(f"<p>Not finished (left out): {escape(', '.join(report.missing))}</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(report.title)}</title><style>{STYLE}</style>"
        f"<script>{SELF_CHECK}</script></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
