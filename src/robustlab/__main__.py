"""``python -m robustlab`` runs the CLI."""

from robustlab.cli import main

main()
