"""What is available to run on: ``models``, ``defenses`` and ``data list``, ``verify`` and
``download``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from robustlab import data as datasets
from robustlab.cli.common import DATA_ROOT_HELP, app, data_app
from robustlab.cli.console import console, errors, print_table
from robustlab.errors import ConfigError
from robustlab.models import MODELS, build_model, count_parameters


@app.command()
def models(
    input_shape: str = typer.Option("1,28,28", help="C,H,W used to count parameters"),
    num_classes: int = typer.Option(10, help="classes used to count parameters"),
) -> None:
    """List the model registry with parameter counts."""
    shape = _parse_shape(input_shape)
    rows = []
    for entry in MODELS.entries():
        model = build_model(
            entry.name,
            input_shape=shape,
            num_classes=num_classes,
            mean=[0.5] * shape[0],
            std=[0.5] * shape[0],
        )
        rows.append([entry.name, f"{count_parameters(model):,}", entry.description])
    print_table(
        f"models (parameters for input {input_shape}, {num_classes} classes)",
        ["name", "parameters", "description"],
        rows,
    )


@app.command()
def defenses() -> None:
    """List the defense registry (a model's defenses:) with options and what attacks need."""
    from robustlab.defenses import DEFENSES, defense_options

    rows = []
    for entry in DEFENSES.entries():
        options = ", ".join(
            f"{name}={value!r}" for name, value in defense_options(entry.name).items()
        )
        rows.append([entry.name, options or "–", entry.description])
    print_table(
        "defenses (wrappers in a model's defenses: list)", ["name", "options", "description"], rows
    )


@data_app.command("list")
def data_list(data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP)) -> None:
    """Which datasets are present, and where."""
    root = datasets.resolve_data_root(data_root)
    rows = []
    for status in datasets.dataset_status(data_root):
        where = "built in" if not status.needs_files else (status.location or "-")
        rows.append([status.name, "yes" if status.present else "no", where])
    print_table(f"datasets (data root {root})", ["name", "present", "location"], rows)


@data_app.command("verify")
def data_verify(
    names: list[str] = typer.Argument(None, help="datasets to verify (default: all present)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
) -> None:
    """Check every file's checksum; exit 1 if a dataset asked for or found is incomplete or
    corrupt, if a dataset asked for is absent, or if there is no data root to verify."""
    report = datasets.verify_datasets(names or None, data_root)
    print_table(
        f"datasets (data root {report.root})",
        ["dataset", "state", "detail"],
        [[v.name, v.state, v.summary()] for v in report.datasets],
    )
    rows = [
        [verdict.name, str(check.path), check.status, check.detail]
        for verdict in report.datasets
        if verdict.state not in ("absent", "built in")
        for check in verdict.checks
    ]
    if rows:
        print_table("checksums", ["dataset", "file", "status", "detail"], rows)
    problems = report.problems()
    for problem in problems:
        errors.print(f"error: {problem}", markup=False)
    if problems:
        raise typer.Exit(1)


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="dataset to download"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    mirror: list[str] = typer.Option([], help="base URL to try instead of the defaults"),
) -> None:
    """Download a dataset's canonical files into the data root and verify them."""
    paths = datasets.download_dataset(name, data_root, mirrors=mirror or None)
    for path in paths:
        console.print(f"ok  {path}")
    if not paths:
        console.print(f"{name}: nothing to download")


def _parse_shape(text: str) -> tuple[int, int, int]:
    """``--input-shape`` as (C, H, W), with a one-line error for anything else."""
    parts = text.split(",")
    try:
        c, h, w = (int(part) for part in parts)
    except ValueError:
        raise ConfigError(f"--input-shape {text!r}: expected C,H,W, e.g. 1,28,28") from None
    return c, h, w
