"""The map's model and its verdict: ``measure = a + b·depth + c·log2(parameters)``.

Least squares over every trial (each seed a point). ``b`` is what one more layer does at the
same parameter count, which is the question of Hypothesis 1 with size taken out: in the
``convnet`` family a deeper model at the same width has *fewer* parameters (the pooled
feature map shrinks), so comparing depths at one width would confound depth with size. The
same fit per seed gives the spread over seeds; the interval is the usual t interval of the
pooled fit. Kept deliberately simple: three numbers a reader can check against the heatmaps.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from robustlab.experiments.kinds.plasticity.cells import Cell, GridPoint

TERMS = ("intercept", "depth", "log2 parameters")


@dataclass(frozen=True)
class LinearFit:
    measure: str
    count: int
    coefficients: tuple[float, ...]
    errors: tuple[float, ...]
    """Standard errors of the coefficients."""
    r_squared: float
    residual_std: float
    per_seed_depth: tuple[float, ...]
    """The depth coefficient fitted on each seed's trials alone (seeds with enough trials)."""

    def interval(self, term: int, level: float = 0.95) -> tuple[float, float]:
        dof = self.count - len(self.coefficients)
        half = float(stats.t.ppf(0.5 + level / 2, dof)) * self.errors[term]
        return self.coefficients[term] - half, self.coefficients[term] + half


def fit_measure(cells: Sequence[Cell], measure: str, scale: float = 1.0) -> LinearFit | None:
    """The fit of ``scale`` × ``measure`` (a Cell attribute; 100 turns shares into points),
    or None when the trials cannot separate depth from size (fewer than two depths, or no
    more trials than coefficients)."""
    found = [(cell, getattr(cell, measure)) for cell in cells]
    rows = [(cell, scale * float(value)) for cell, value in found if value is not None]
    return fit_rows(measure, rows)


def fit_rows(measure: str, rows: Sequence[tuple[Cell, float]]) -> LinearFit | None:
    """The fit of any per-trial number (e.g. a compression probe's loss), as ``fit_measure``."""
    solved = _solve(rows)
    if solved is None:
        return None
    coefficients, errors, r_squared, residual_std = solved
    per_seed = []
    for seed in sorted({cell.seed for cell, _ in rows}):
        own = _solve([(cell, value) for cell, value in rows if cell.seed == seed])
        if own is not None:
            per_seed.append(own[0][1])
    return LinearFit(
        measure=measure,
        count=len(rows),
        coefficients=coefficients,
        errors=errors,
        r_squared=r_squared,
        residual_std=residual_std,
        per_seed_depth=tuple(per_seed),
    )


def _solve(
    rows: Sequence[tuple[Cell, float]],
) -> tuple[tuple[float, ...], tuple[float, ...], float, float] | None:
    if len({cell.depth for cell, _ in rows}) < 2 or len(rows) <= len(TERMS):
        return None
    design = np.array([[1.0, cell.depth, math.log2(cell.parameters)] for cell, _ in rows])
    target = np.array([value for _, value in rows])
    if np.linalg.matrix_rank(design) < len(TERMS):
        return None  # depth and size move together: nothing separates them
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residuals = target - design @ coefficients
    dof = len(rows) - len(TERMS)
    variance = float(residuals @ residuals) / dof
    covariance = variance * np.linalg.inv(design.T @ design)
    spread = float(((target - target.mean()) ** 2).sum())
    r_squared = 1 - float(residuals @ residuals) / spread if spread > 0 else math.nan
    return (
        tuple(float(value) for value in coefficients),
        tuple(float(math.sqrt(max(value, 0.0))) for value in np.diag(covariance)),
        r_squared,
        math.sqrt(variance),
    )


@dataclass(frozen=True)
class Verdict:
    answer: str
    """``yes``, ``no`` (depth raises it), or ``undecided``."""
    text: str


def depth_verdict(fit: LinearFit | None, lower_is_better: bool = True) -> Verdict:
    """Does one more layer, at equal parameter count, move the measure the good way?

    Decided only when the whole 95% interval lies on one side of zero."""
    if fit is None:
        return Verdict(
            "undecided",
            "the trials cannot separate depth from size (fewer than two depths, or too few "
            "trials for a three-term fit)",
        )
    low, high = fit.interval(1)
    effect = fit.coefficients[1]
    seeds = ""
    if len(fit.per_seed_depth) > 1:
        seeds = f"; fitted per seed: {', '.join(f'{value:+.2f}' for value in fit.per_seed_depth)}"
    where = f"{effect:+.2f} per layer (95% interval {low:+.2f} to {high:+.2f}{seeds})"
    good = high < 0 if lower_is_better else low > 0
    bad = low > 0 if lower_is_better else high < 0
    if good:
        return Verdict("yes", f"at equal parameter count, one more layer moves it by {where}")
    if bad:
        return Verdict(
            "no", f"at equal parameter count, one more layer moves it the wrong way: {where}"
        )
    return Verdict("undecided", f"the interval includes zero: {where}")


def iso_parameter_rows(
    points: Sequence[GridPoint], measure: str
) -> tuple[list[float], list[tuple[int, list[float | None]]]]:
    """The measure at equal parameter counts: for each grid point's parameter count, every
    depth's value interpolated linearly in log2(parameters) between its own widths (None
    outside the range its widths cover; no extrapolation)."""
    depths = sorted({point.depth for point in points})
    curves: dict[float, list[tuple[float, float]]] = {}
    for depth in depths:
        curve = []
        for point in points:
            value = point.mean(measure)
            if point.depth == depth and value is not None:
                curve.append((math.log2(point.parameters), value))
        curves[depth] = sorted(curve)
    rows = []
    for size in sorted({point.parameters for point in points}):
        values = [_interpolate(curves[depth], math.log2(size)) for depth in depths]
        if sum(value is not None for value in values) >= 2:
            rows.append((size, values))
    return depths, rows


def _interpolate(curve: list[tuple[float, float]], x: float) -> float | None:
    if not curve or x < curve[0][0] - 1e-9 or x > curve[-1][0] + 1e-9:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x0 - 1e-9 <= x <= x1 + 1e-9:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[0][1]  # a single point, exactly at x


def seed_spread(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else math.nan
