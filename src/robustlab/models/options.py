"""Checks for builder options, shared so every model words its errors the same way.

Options arrive from YAML or the command line, so a value can be the wrong type (``depth: 2.5``,
``dropout: "yes"``) as easily as out of range; each check names the option and what it expects.
``build_model`` prefixes the model's name.
"""

from __future__ import annotations

import math
import numbers

from robustlab.errors import ConfigError


def integer(name: str, value: object, *, minimum: int) -> int:
    """An integer >= ``minimum``; booleans are refused even though Python counts them as ints."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"option {name!r} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def number(name: str, value: object, *, minimum: float, label: str | None = None) -> float:
    """A finite real number >= ``minimum``; ``label`` replaces the printed minimum if given."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < minimum
    ):
        shown = label if label is not None else repr(minimum)
        raise ConfigError(f"option {name!r} must be a number >= {shown}, got {value!r}")
    return float(value)


def probability(name: str, value: object) -> float:
    """A dropout rate: a number in [0, 1) (1 would drop everything)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) < 1.0
    ):
        raise ConfigError(f"option {name!r} must be a probability in [0, 1), got {value!r}")
    return float(value)


def boolean(name: str, value: object) -> bool:
    """A true/false switch; 0 and 1 are refused so a rate is never mistaken for a switch."""
    if not isinstance(value, bool):
        raise ConfigError(f"option {name!r} must be true or false, got {value!r}")
    return value
