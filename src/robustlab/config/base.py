"""What every config schema shares: strictness, and budgets that may be written as fractions."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

FRACTION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*/\s*(\d+(?:\.\d*)?|\.\d+)\s*$")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
"""Experiment, trial, phase and label names: safe as folder names."""


class StrictModel(BaseModel):
    """Base for every schema: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def fraction(value: Any) -> Any:
    """``"8/255"`` → 0.0313…; any other value is returned unchanged for pydantic to check."""
    if isinstance(value, str):
        match = FRACTION.match(value)
        if match:
            denominator = float(match.group(2))
            if denominator == 0:
                raise ValueError(f"{value!r}: division by zero")
            return float(match.group(1)) / denominator
    return value


Budget = Annotated[float, BeforeValidator(fraction), Field(ge=0)]
"""A budget or step size in pixel units; "8/255" is accepted."""
