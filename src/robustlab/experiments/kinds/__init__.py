"""Experiment kinds: what an experiment's report shows, one module each.

A kind is registered with ``@register_kind`` and found by name from the config's ``kind:``;
it brings the schema of its ``report:`` options, its own checks of the plan, and the report's
content (tables, figures, verdicts, published references). Every module of this package is
imported here, so a new kind is one new file and touches no other.
"""

from __future__ import annotations

import importlib
import pkgutil

from robustlab.experiments.kinds.base import KINDS, ExperimentKind, register_kind

__all__ = ["KINDS", "ExperimentKind", "register_kind"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
