"""The experiment's threat model: one ε (and optionally one norm) that every attack and
adversarial objective of the experiment inherits unless it states its own.

The ε may be a number ("8/255" is accepted) or ``calibrated``: the value the experiment's
calibration step finds at run time. That placeholder is a type of its own (``Calibrated``),
so code can tell it from a number without comparing strings, and it is replaced by a number
before any trial that uses it is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer

from robustlab.config.base import StrictModel, fraction

NormName = Literal["linf", "l2", "l1"]


@dataclass(frozen=True)
class Calibrated:
    """Stands for the ε found by the experiment's calibration step (written ``calibrated``)."""

    def __str__(self) -> str:
        return "calibrated"


CALIBRATED = Calibrated()


def _parse_eps(value: Any) -> Any:
    if isinstance(value, Calibrated) or value == "calibrated":
        return CALIBRATED
    value = fraction(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"expected a number, a fraction such as 8/255, or calibrated; got {value!r}"
        )
    if math.isnan(value) or value < 0:
        raise ValueError(f"ε must be a number >= 0, got {value!r}")
    return float(value)


def _dump_eps(value: float | Calibrated) -> float | str:
    return str(value) if isinstance(value, Calibrated) else value


EpsSpec = Annotated[float | Calibrated, BeforeValidator(_parse_eps), PlainSerializer(_dump_eps)]
"""A budget in pixel units, or ``calibrated``."""


class ThreatConfig(StrictModel):
    """What the experiment's attacks inherit: ``threat: {eps: 0.3}`` or ``{eps: calibrated}``."""

    eps: EpsSpec | None = Field(
        default=None,
        description="ε for every attack and adversarial objective that does not state one; "
        "a number, a fraction such as 8/255, or calibrated",
    )
    norm: NormName | None = Field(
        default=None, description="norm for every attack with a norm that does not state one"
    )

    @property
    def calibrated(self) -> bool:
        return isinstance(self.eps, Calibrated)


@dataclass(frozen=True)
class Threat:
    """A resolved threat: the numbers attacks inherit (None: each keeps its own)."""

    eps: float | None = None
    norm: str | None = None

    @property
    def empty(self) -> bool:
        return self.eps is None and self.norm is None


def resolve_threat(config: ThreatConfig, calibrated: float | None) -> Threat:
    """The threat with ``calibrated`` replaced by the calibration's ε (None: not yet known,
    so attacks that would inherit it keep their own until it is)."""
    eps = config.eps
    if isinstance(eps, Calibrated):
        return Threat(eps=calibrated, norm=config.norm)
    return Threat(eps=eps, norm=config.norm)
