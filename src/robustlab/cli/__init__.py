"""The ``robustlab`` command line: the only part of the package that prints.

``main`` (experiments, training, attacks, data, models), ``fhe`` (encrypted inference) and
``console`` (progress, tables). It may import every other package; nothing imports it.
"""

from robustlab.cli.main import app, main

__all__ = ["app", "main"]
