"""``robustlab capacity``: memorisation capacity and its robust analogue for the
architectures of a run, an experiment folder or an experiment config."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from robustlab.cli.common import app
from robustlab.cli.console import console, print_table


@app.command()
def capacity(
    source: Path = typer.Argument(
        ..., help="a run folder, an experiment folder, or an experiment config (YAML)"
    ),
    robust: bool = typer.Option(
        False, help="the robust analogue: fit the attack's examples of true labels"
    ),
    epochs: int = typer.Option(100, help="the budget: passes over the set"),
    min_steps: Optional[int] = typer.Option(
        None, help="a floor on the budget in optimiser steps, for small sets"
    ),
    batch_size: int = typer.Option(128, help="minibatch size"),
    lr: float = typer.Option(1e-3, help="Adam's step"),
    threshold: float = typer.Option(0.99, help="training accuracy that counts as fitted"),
    min_images: int = typer.Option(100, help="the search's smallest set"),
    max_images: int = typer.Option(10_000, help="the search's largest set"),
    resolution: float = typer.Option(0.1, help="stop when the bracket is within this ratio"),
    repeats: int = typer.Option(3, help="independent searches, for the spread"),
    eps: Optional[float] = typer.Option(
        None, help="robust: the attack's ε (default: the training attack's)"
    ),
    steps: int = typer.Option(10, help="robust: PGD steps of the attack fitted against"),
    out: Path = typer.Option(Path("runs"), help="parent of NAME/ for a config's results"),
    file: Optional[Path] = typer.Option(
        None, help="results file (default: capacity.json or capacity-robust.json in the folder)"
    ),
) -> None:
    """Find, by bisection, the largest training set each architecture fits within the
    budget (random labels: memorisation capacity; --robust: adversarial examples of true
    labels), repeated for the spread. Resumable: rerun the same command to continue."""
    from robustlab.config.loading import parse_config
    from robustlab.experiments.capacity import CapacitySettings, measure_capacity

    attack = None
    if robust:
        attack = {"name": "pgd", "steps": steps, **({"eps": eps} if eps is not None else {})}
    settings = parse_config(
        CapacitySettings,
        {
            "measure": "robust" if robust else "memorisation",
            "epochs": epochs,
            "min_steps": min_steps,
            "batch_size": batch_size,
            "lr": lr,
            "threshold": threshold,
            "min_images": min_images,
            "max_images": max_images,
            "resolution": resolution,
            "repeats": repeats,
            "attack": attack,
        },
        source="capacity options",
    )
    path, results = measure_capacity(
        source, settings, out=out, file=file, status=lambda line: console.print(line)
    )
    rows = []
    for result in results:
        spread = result["capacity_std"]
        rows.append(
            [
                result["label"],
                f"{result['parameters']:,}",
                ("≥ " if result["lower_bound"] else "")
                + f"{result['capacity_mean']:,.0f}"
                + ("" if spread is None else f" ± {spread:,.0f}"),
                str(len(result["repeats"])),
                f"{result['seconds']:.0f}",
            ]
        )
    what = "robust capacity" if robust else "memorisation capacity"
    floor = "" if min_steps is None else f" (at least {min_steps} steps)"
    print_table(
        f"{what}: images fitted to {threshold:.0%} within {epochs} epochs{floor}",
        ["architecture", "parameters", "capacity (mean ± std)", "repeats", "seconds"],
        rows,
    )
    console.print(f"results: {path}")
