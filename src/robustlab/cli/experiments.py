"""Experiment commands: ``run``, ``sweep status``, ``kinds`` and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from robustlab.cli.common import DATA_ROOT_HELP, app, print_results, sweep_app
from robustlab.cli.console import ConsoleReporter, console, print_table
from robustlab.config import (
    DataConfig,
    ExecutorConfig,
    ExperimentConfig,
    load_experiment,
    parse_config,
)
from robustlab.experiments import run_experiment


@app.command()
def run(
    config_file: Path = typer.Argument(..., help="experiment YAML, e.g. configs/quickstart.yaml"),
    out: Path = typer.Option(Path("runs"), help="parent of the experiment directory"),
    dataset: Optional[str] = typer.Option(None, help="override data.dataset (drops fallbacks)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    device: Optional[str] = typer.Option(None, help="override device"),
    jobs: Optional[int] = typer.Option(
        None,
        min=1,
        max=64,
        help="override jobs: trials run side by side, each with an equal share of the CPU threads",
    ),
    executor: Optional[str] = typer.Option(
        None, help="override executor: serial, processes or ray"
    ),
    address: Optional[str] = typer.Option(
        None, help="with --executor ray: a cluster's address (default: start a local Ray)"
    ),
) -> None:
    """Run (or resume) every trial of an experiment config and print the results."""
    config = load_experiment(config_file)
    config = _override_experiment(config, dataset=dataset, data_root=data_root, device=device)
    if jobs is not None:
        config = config.model_copy(update={"jobs": jobs})
    if executor is not None or address is not None:
        chosen = parse_config(
            ExecutorConfig,
            {"type": executor or config.executor.type, "address": address},
            source="--executor/--address",
        )
        config = config.model_copy(update={"executor": chosen})
    result = run_experiment(config, out, reporter=ConsoleReporter())
    print_results(result.trials)
    console.print(f"experiment directory: {result.directory}")
    if result.report is not None:
        console.print(f"report: {result.report}")


@sweep_app.command("status")
def sweep_status(
    experiment: Path = typer.Argument(
        ..., help="an experiment folder (runs/NAME), or a NAME under --out"
    ),
    out: Path = typer.Option(Path("runs"), help="where to look for a bare NAME"),
) -> None:
    """Every trial of the experiment's plan: done, running, failed or pending."""
    from robustlab.experiments.status import trial_statuses

    directory = experiment if experiment.is_dir() else out / experiment
    statuses = trial_statuses(directory)
    rows = [
        [
            status.name,
            status.status,
            status.point,
            f"{status.seconds / 60:.1f}" if status.seconds is not None else "",
            status.result,
        ]
        for status in statuses
    ]
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status.status] = counts.get(status.status, 0) + 1
    totals = ", ".join(f"{count} {name}" for name, count in counts.items())
    print_table(
        f"{directory}: {totals}",
        ["trial", "status", "sweep point", "minutes", "result"],
        rows,
    )


@app.command()
def kinds() -> None:
    """List the experiment kinds (the config's kind:)."""
    from robustlab.experiments.kinds import KINDS

    print_table(
        "experiment kinds",
        ["name", "report options", "description"],
        [
            [entry.name, ", ".join(entry.value.options.model_fields), entry.description]
            for entry in KINDS.entries()
        ],
    )


@app.command()
def report(
    experiment_dir: Path = typer.Argument(..., help="an experiment folder written by run"),
    export: Optional[Path] = typer.Option(
        None,
        help="also write report.md, report.csv and figures/ here (e.g. docs/results/NAME): "
        "the committed results file a doc's figures come from",
    ),
) -> None:
    """Write the experiment's report (Markdown, CSV, PNG figures, one HTML page) and print
    its tables."""
    from robustlab.experiments.reporting import build_report, export_report, write_report

    built = build_report(experiment_dir)
    page = write_report(built, experiment_dir / "report")
    if export is not None:
        console.print(f"exported: {export_report(built, export)}")
    for section in built.all_sections:
        for table in section.tables:
            print_table(table.title, table.columns, table.rows)
        for callout in section.callouts:
            console.print(f"{callout.lead}: {callout.text}")
    for paragraph in built.paragraphs:
        console.print(paragraph)
    if built.missing:
        console.print(f"not finished (left out): {', '.join(built.missing)}")
    console.print(f"report: {page} (also report.md, report.csv, figures/)")


def _override_experiment(
    config: ExperimentConfig,
    *,
    dataset: str | None,
    data_root: Path | None,
    device: str | None,
) -> ExperimentConfig:
    """Apply ``run``'s override flags; a new dataset also renames the experiment."""
    data = config.data
    name = config.name
    if dataset is not None:
        data = DataConfig(dataset=dataset, fallback=[], root=data.root)
        name = f"{config.name}-{dataset}"  # keep runs on different datasets apart
    if data_root is not None:
        data = data.model_copy(update={"root": data_root})
    return config.model_copy(update={"name": name, "data": data, "device": device or config.device})
