"""Building a registered model: check the inputs and options, then wrap the body.

The wrapping (``Classifier(Normalize(mean, std), body)``) and the option-name check happen
here, once, so builders only build their architecture and check their own options' ranges.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Sequence
from typing import Any

from torch import nn

from robustlab.errors import ConfigError
from robustlab.models.catalog import MODELS, ModelBuilder
from robustlab.models.classifier import Classifier
from robustlab.models.normalize import Normalize


def _option_parameters(builder: ModelBuilder) -> list[inspect.Parameter]:
    """A builder's options are its keyword-only parameters."""
    parameters = inspect.signature(builder).parameters.values()
    return [p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def model_options(name: str) -> dict[str, Any]:
    """Option names mapped to their defaults, in declaration order (for listings and help)."""
    return {p.name: p.default for p in _option_parameters(MODELS.get(name))}


def _check_option_names(name: str, builder: ModelBuilder, options: dict[str, Any]) -> None:
    known = [p.name for p in _option_parameters(builder)]
    for option in options:
        if option not in known:
            listed = ", ".join(known) or "(none)"
            raise ConfigError(f"model {name!r} has no option {option!r}; options: {listed}")


def _check_input_shape(input_shape: object) -> tuple[int, int, int]:
    if (
        not isinstance(input_shape, Sequence)
        or len(input_shape) != 3
        or any(
            isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1
            for size in input_shape
        )
    ):
        raise ConfigError(
            "input_shape must be three positive integers (channels, height, width), "
            f"got {input_shape!r}"
        )
    channels, height, width = (int(size) for size in input_shape)
    return channels, height, width


def build_model(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    **options: Any,
) -> Classifier:
    """The registered model ``name`` for inputs in [0, 1] of ``input_shape`` (C, H, W).

    Raises ``UnknownNameError`` for an unregistered name and ``ConfigError`` for an unknown or
    invalid option, a bad shape or class count, or mean/std that do not fit the channels.
    """
    builder = MODELS.get(name)
    shape = _check_input_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    _check_option_names(name, builder, options)
    normalize = Normalize(mean, std)
    if normalize.mean.numel() != shape[0]:
        raise ConfigError(
            f"mean and std must have one value per input channel: input_shape {shape} has "
            f"{shape[0]} channel(s) but mean/std have {normalize.mean.numel()} values"
        )
    try:
        body = builder(shape, num_classes, **options)
    except ConfigError as error:
        raise ConfigError(f"model {name!r}: {error}") from error
    return Classifier(normalize=normalize, body=body)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameter elements (buffers such as Normalize's mean/std do not count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
