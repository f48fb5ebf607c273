"""The ``train`` command: one model, standard training, from command-line options alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from robustlab.cli.common import DATA_ROOT_HELP, app, parse_options, print_results
from robustlab.cli.console import ConsoleReporter, console
from robustlab.config import TrialConfig, parse_config
from robustlab.store.runs import RunDirectory
from robustlab.train import train_trial


@app.command()
def train(
    model: str = typer.Option(
        "thesis-shallow", help="model registry name (see `robustlab models`)"
    ),
    dataset: str = typer.Option("digits", help="dataset name (see `robustlab data list`)"),
    epochs: int = typer.Option(12, help="epochs of standard training"),
    batch_size: int = typer.Option(128, help="training batch size"),
    optimizer: str = typer.Option("adam", help="sgd, adam or adamw"),
    lr: float = typer.Option(1e-3, help="learning rate"),
    momentum: float = typer.Option(0.9, help="SGD momentum"),
    weight_decay: float = typer.Option(0.0, help="weight decay"),
    schedule: str = typer.Option("constant", help="constant, cosine, step, multistep, cyclic"),
    precision: str = typer.Option("fp32", help="fp32, or bf16 autocast"),
    option: list[str] = typer.Option([], "--option", "-o", help="model option KEY=VALUE"),
    seed: int = typer.Option(0, help="seed for initialisation, shuffling and dropout"),
    run_dir: Optional[Path] = typer.Option(None, help="run directory (default runs/train/NAME)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --run-dir"),
) -> None:
    """Train one model with standard training and write a run directory."""
    trial_name = f"{model}-{dataset}-s{seed}"
    raw: dict[str, Any] = {
        "experiment": "train",
        "trial": trial_name,
        "data": {"dataset": dataset, "root": data_root},
        "model": {"name": model, "options": parse_options(option)},
        "seed": seed,
        "device": device,
        "phases": [
            {
                "name": "clean",
                "epochs": epochs,
                "objective": "standard",
                "batch_size": batch_size,
                "precision": precision,
                "optimizer": {
                    "type": optimizer,
                    "lr": lr,
                    "momentum": momentum,
                    "weight_decay": weight_decay,
                },
                "schedule": {"type": schedule},
            }
        ],
    }
    config: TrialConfig = parse_config(TrialConfig, raw, source="command-line options")
    directory = run_dir or Path("runs") / "train" / trial_name
    result = train_trial(config, directory, resume=resume, reporter=ConsoleReporter())
    print_results([RunDirectory(result.run_dir).read_results()])
    console.print(f"run directory: {result.run_dir}")
