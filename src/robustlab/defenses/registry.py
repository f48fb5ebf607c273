"""Defense components by name: ``{name: jpeg, quality: 75}`` in a model's ``defenses`` list.

A builder takes ``(input_shape, num_classes, **options)`` and returns an ``InputTransform``,
a ``LogitTransform`` or a ``Detector`` (or a ``Defense`` bundling a transform with detectors,
as MagNet does); it checks its options' ranges and whether it fits the input shape, raising
``ConfigError`` naming the option.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from robustlab.defenses.base import Detector, InputTransform, LogitTransform
from robustlab.errors import ConfigError
from robustlab.registry import Registry


@dataclass
class Defense:
    """What one entry of ``defenses`` contributes, in application order."""

    transforms: list[InputTransform] = field(default_factory=list)
    logit_transforms: list[LogitTransform] = field(default_factory=list)
    detectors: list[Detector] = field(default_factory=list)


DefenseBuilder = Callable[..., "InputTransform | LogitTransform | Detector | Defense"]

DEFENSES: Registry[DefenseBuilder] = Registry("defense")


def defense_options(name: str) -> dict[str, Any]:
    """A builder's options (its keyword-only parameters) with their defaults."""
    parameters = inspect.signature(DEFENSES.get(name)).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_defense(
    name: str, input_shape: Sequence[int], num_classes: int, **options: Any
) -> Defense:
    """The named component for inputs of ``input_shape``, as a ``Defense``."""
    builder = DEFENSES.get(name)
    known = defense_options(name)
    for option in options:
        if option not in known:
            listed = ", ".join(known) or "(none)"
            raise ConfigError(f"defense {name!r} has no option {option!r}; options: {listed}")
    shape = tuple(int(size) for size in input_shape)
    try:
        built = builder(shape, num_classes, **options)
    except ConfigError as error:
        raise ConfigError(f"defense {name!r}: {error}") from error
    return as_defense(built)


def as_defense(built: nn.Module | Defense) -> Defense:
    if isinstance(built, Defense):
        return built
    if isinstance(built, InputTransform):
        return Defense(transforms=[built])
    if isinstance(built, LogitTransform):
        return Defense(logit_transforms=[built])
    if isinstance(built, Detector):
        return Defense(detectors=[built])
    raise TypeError(f"a defense builder returned {type(built).__name__}, not a defense component")
