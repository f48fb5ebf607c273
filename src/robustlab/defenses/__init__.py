"""Defenses of the thesis's survey (Ch. 2.3), each a part a trained classifier is wrapped in.

``build_defended(classifier, specs, input_shape, num_classes)`` wraps a classifier in the
named components (input transforms, logit transforms, detectors; ``robustlab.defenses.base``);
``gradient_view`` gives an attack BPDA / EOT / joint-detector gradients through them.
Every module of this package is imported here, so its components are registered.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from robustlab.defenses.base import Detector, FitData, InputTransform, LogitTransform
from robustlab.defenses.defended import DefendedModel
from robustlab.defenses.gradients import Gradients, check_gradients, gradient_view
from robustlab.defenses.registry import DEFENSES, Defense, build_defense, defense_options
from robustlab.errors import ConfigError, RobustlabError

__all__ = [
    "DEFENSES",
    "DefendedModel",
    "Defense",
    "Detector",
    "FitData",
    "Gradients",
    "InputTransform",
    "LogitTransform",
    "build_defended",
    "build_defense",
    "check_gradients",
    "defense_options",
    "gradient_view",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_defended(
    classifier: nn.Module,
    specs: Sequence[Mapping[str, Any]],
    input_shape: Sequence[int],
    num_classes: int,
) -> DefendedModel:
    """``classifier`` wrapped in the components ``specs`` name (``{name: jpeg, quality: 75}``),
    in order; each is checked against ``input_shape`` (an error names the entry)."""
    parts, names = [], []
    for index, spec in enumerate(specs):
        options = {key: value for key, value in spec.items() if key != "name"}
        try:
            parts.append(build_defense(str(spec["name"]), input_shape, num_classes, **options))
        except RobustlabError as error:
            raise ConfigError(f"defenses.{index}: {error}") from error
        names.append(str(spec["name"]))
    return DefendedModel(classifier, parts, names)
