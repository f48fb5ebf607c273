"""``robustlab report EXPERIMENT_DIR``: the experiment's kind decides what the report shows;
this module writes it as Markdown, CSV, PNG and one HTML page.

Written into ``<experiment>/report/``: ``report.md`` (tables and verdicts, figures linked),
``report.csv`` (every table cell, one row each), ``figures/*.png`` and ``report.html`` (the
same content with the figures embedded, so the page opens from disk with no server).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from robustlab.experiments.collect import collect
from robustlab.experiments.document import Report
from robustlab.experiments.page import render_page
from robustlab.experiments.plan import build_plan
from robustlab.experiments.tables import Table
from robustlab.io import atomic_write_bytes, atomic_write_text
from robustlab.store.experiment import ExperimentDirectory


def build_report(directory: Path) -> Report:
    plan = build_plan(ExperimentDirectory(directory).read_config())
    data = collect(directory, plan)
    return plan.kind.report(data, plan.options)


def write_report(report: Report, folder: Path) -> Path:
    """Write the report folder; return the HTML page's path."""
    for section in report.all_sections:
        for name, png in section.figures.items():
            atomic_write_bytes(folder / "figures" / name, png)
    atomic_write_text(folder / "report.md", markdown(report))
    atomic_write_text(folder / "report.csv", table_csv(report))
    return atomic_write_text(folder / "report.html", render_page(report))


def export_report(report: Report, folder: Path) -> Path:
    """The report's text, every table cell and the figures, for committing beside a doc (no
    HTML page: its figures are the PNGs already here)."""
    for section in report.all_sections:
        for name, png in section.figures.items():
            atomic_write_bytes(folder / "figures" / name, png)
    atomic_write_text(folder / "report.md", markdown(report))
    return atomic_write_text(folder / "report.csv", table_csv(report))


def write_experiment_report(directory: Path) -> Path:
    """Build the experiment's report and write it into ``<directory>/report``."""
    return write_report(build_report(directory), directory / "report")


def markdown_table(table: Table) -> str:
    lines = [f"**{table.title}**", ""]
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.columns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"_{table.note}_"]
    return "\n".join(lines)


def markdown(report: Report) -> str:
    parts = [f"# {report.title}", *report.paragraphs]
    for section in report.all_sections:
        parts.append(f"## {section.heading}")
        parts += [markdown_table(table) for table in section.tables]
        parts += [f"**{callout.lead}** {callout.text}" for callout in section.callouts]
        parts += [f"![{name}](figures/{name})" for name in section.figures]
    if report.missing:
        parts.append("Not finished (left out): " + ", ".join(report.missing))
    return "\n\n".join(parts) + "\n"


def table_csv(report: Report) -> str:
    """Every cell of every table as a row: section, table, row label, column, mean, std, text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["section", "table", "row", "column", "mean", "std", "text"])
    for section in report.all_sections:
        for table in section.tables:
            width = table.label_columns
            for row in table.rows:
                label = " / ".join(row[:width])
                for column, cell in zip(table.columns[1:], row[1:], strict=True):
                    mean, std = _numbers(cell)
                    writer.writerow([section.heading, table.title, label, column, mean, std, cell])
    return buffer.getvalue()


def _numbers(cell: str) -> tuple[str, str]:
    parts = [part.strip() for part in cell.split("±")]
    try:
        values = [float(part.replace(",", "")) for part in parts]
    except ValueError:
        return "", ""
    mean = values[0]
    std = values[1] if len(values) > 1 else math.nan
    return f"{mean:g}", "" if math.isnan(std) else f"{std:g}"
