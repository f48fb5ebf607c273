"""The shared typer apps every command module registers on, and helpers several commands use."""

from __future__ import annotations

from typing import Any

import typer
import yaml

from robustlab.cli.console import print_table
from robustlab.cli.fhe import fhe_app
from robustlab.errors import ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Attacks, defenses and capacity experiments for robust deep learning.",
)
data_app = typer.Typer(no_args_is_help=True, help="List, verify and download datasets.")
app.add_typer(data_app, name="data")
sweep_app = typer.Typer(no_args_is_help=True, help="Inspect an experiment's trials.")
app.add_typer(sweep_app, name="sweep")
app.add_typer(fhe_app, name="fhe")  # concrete-python is imported only when a command needs it

DATA_ROOT_HELP = "data root (default: $ROBUSTLAB_DATA, else ~/.cache/robustlab)"


def parse_options(pairs: list[str], flag: str = "--option") -> dict[str, Any]:
    """KEY=VALUE flags as a dict; each VALUE is read as YAML so numbers and lists keep type."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {flag} depth=4")
        options[key] = yaml.safe_load(value)
    return options


def print_results(results: list[dict[str, Any]]) -> None:
    """One row per finished trial's results file: what train and run end with."""
    rows = []
    for result in results:
        final = result["final"]
        rows.append(
            [
                result["trial"],
                result["model"],
                f"{result['parameters']:,}",
                result["dataset"],
                result["epochs"],
                f"{final.get('train_eval_acc', final['train_acc']):.2%}",
                f"{final['test_acc']:.2%}",
                f"{result['train_seconds']:.0f}s",
            ]
        )
    print_table(
        "results (clean accuracy; train = eval-mode accuracy on the train subset)",
        ["trial", "model", "params", "dataset", "epochs", "train acc", "test acc", "train time"],
        rows,
    )
