"""Hyper-parameter checks shared by every attack: errors name the attack and the field."""

from __future__ import annotations

import math


def check_range(
    attack: object,
    field: str,
    value: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    inclusive: bool = True,
) -> None:
    owner = type(attack).__name__
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{owner}.{field} must be a number, got {value!r}")
    if minimum is not None and (value < minimum or (not inclusive and value == minimum)):
        relation = ">=" if inclusive else ">"
        raise ValueError(f"{owner}.{field} must be {relation} {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{owner}.{field} must be <= {maximum}, got {value!r}")
