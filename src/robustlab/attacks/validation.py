"""Hyper-parameter checks shared by every attack: errors name the attack and the field.

Budgets get checks of their own (``check_eps``, ``check_steps``, ``check_count``,
``ball_diameter``): a budget that cannot change the input, or one larger than the input box,
would otherwise produce a "robust accuracy" that measures nothing, reported as a finding.
"""

from __future__ import annotations

import math
import operator

from robustlab.errors import ConfigError

LINF_MAX_EPS = 1.0
"""Inputs are pixels in [0, 1]: an L∞ radius of 1 already allows any image."""
CLEAN_ONLY = "would measure (or train on) clean inputs only, reported as robustness"


class BudgetError(ConfigError, ValueError):
    """A budget that would make an evaluation meaningless. A ConfigError, so the CLI prints it
    without a traceback wherever it surfaces; a ValueError, like every other bad
    hyper-parameter of an attack."""


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


def eps_problem(value: object, norm: str) -> str | None:
    """Why ``value`` is no usable radius for ``norm`` ("must be ..."), or None if it is.

    Shared with the config schemas, so a training objective's ε is judged like an attack's.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if value < 0:
        return f"must be > 0, got {value!r}: a radius is never negative"
    if value == 0:
        return (
            f"must be > 0, got {value!r}: ε = 0 cannot change the input, so the attack {CLEAN_ONLY}"
        )
    if norm == "linf" and value > LINF_MAX_EPS:
        return (
            f"must be <= {LINF_MAX_EPS:g} for an L∞ budget, got {value!r}: inputs are pixels "
            "in [0, 1], so ε = 1 already allows any image (usual budgets: 8/255, 0.1, 0.3)"
        )
    return None


def check_eps(attack: object, value: object, norm: str, field: str = "eps") -> None:
    """A radius in pixel units: > 0, and <= 1 for L∞ (L2/L1 are bounded per input shape at
    run time, see ``ball_diameter``)."""
    problem = eps_problem(value, norm)
    if problem is not None:
        raise BudgetError(f"{type(attack).__name__}.{field} {problem}")


def check_count(
    attack: object, field: str, value: object, *, minimum: int = 1, why: str = ""
) -> None:
    """An integer count (restarts, queries, pixels) of at least ``minimum``; ``why`` says what
    a smaller one would do."""
    owner = type(attack).__name__
    number = _integer(value)
    if number is None:
        raise BudgetError(f"{owner}.{field} must be an integer, got {value!r}")
    if number < minimum:
        raise BudgetError(f"{owner}.{field} must be >= {minimum}, got {value!r}{why}")


def check_steps(attack: object, field: str, value: object) -> None:
    """Iterations of an iterative attack: at least one, or it returns its input unchanged."""
    why = f": with no step the attack returns its input unchanged, so it {CLEAN_ONLY}"
    check_count(attack, field, value, why=why)


def ball_diameter(norm: str, features: int) -> float | None:
    """The largest distance in ``norm`` between two points of the box [0, 1]^features: a
    larger radius constrains nothing. None for norms without a radius (L0, "none")."""
    if norm == "linf":
        return LINF_MAX_EPS
    if norm == "l2":
        return math.sqrt(features)
    if norm == "l1":
        return float(features)
    return None


def _integer(value: object) -> int | None:
    """``value`` as an int if it is an integer (numpy's included), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None
