"""The ``robustlab`` command: train, run, sweep, report, eval, attack, data, models, kinds.

Each command lives in a module of its kind and registers on the shared ``app`` when imported;
this module imports them all and runs the app. Every user error is a RobustlabError whose
message is printed without a traceback (exit 2).
"""

from __future__ import annotations

import sys

from rich.markup import escape

from robustlab.cli.common import app
from robustlab.cli.console import errors
from robustlab.errors import RobustlabError

# Importing a command module registers its commands, and `robustlab --help` lists them in
# registration order, so this order is the help page's: keep the import sorter out of it.
# isort: off
from robustlab.cli import training  # noqa: F401
from robustlab.cli import experiments  # noqa: F401
from robustlab.cli import evaluation  # noqa: F401
from robustlab.cli import catalog  # noqa: F401
from robustlab.cli import capacity  # noqa: F401
from robustlab.cli import fhe_service  # noqa: F401  (after cli.fhe, which common mounts)

# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """Run the CLI, turning a RobustlabError into one line on stderr and exit status 2."""
    try:
        app()
    except RobustlabError as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        errors.print("interrupted; rerun with --resume to continue from the last checkpoint")
        sys.exit(130)
