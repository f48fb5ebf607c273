"""Find the budget at which an attack reaches a given success rate.

The thesis reports "ε = 8" without a scale, and 8/255 is far too weak on MNIST to give its
56% success before adversarial training. Calibration makes the interpretation explicit: for
every example a batched bisection brackets the smallest ε at which the attack (PGD-200 by
default) fools the model; the success rate at any ε is then the share of examples whose
smallest ε is at most that, and the calibrated ε is where that curve crosses the target.

Only the examples whose bracket can still move that crossing need halving: one already known
to fall below the target quantile's lower bound, or above its upper bound, leaves the quantile
unchanged however its bracket narrows. Refining only the others (``refine="target"``) gives the
same ε with about half the attack calls; the curve away from ε is then known as a band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from robustlab.attacks.base import Attack
from robustlab.batching import chunked_forward
from robustlab.modes import eval_mode

Refinement = Literal["all", "target"]


@dataclass(frozen=True)
class Calibration:
    """Per-example brackets of the smallest fooling ε, pooled over models, and the ε at the
    target success."""

    target_success: float
    eps: float
    """Smallest ε whose pooled success rate reaches the target (inf if none up to ``high``)."""
    minimal_eps: list[float]
    """For every clean-correct example of every model, ascending: the smallest ε found to fool
    it (the bracket's upper end; inf: none up to ``high``)."""
    lower_eps: list[float]
    """The brackets' lower ends, aligned with ``minimal_eps``: no ε at or below fooled it."""
    resolution: float

    def success_at(self, eps: float) -> float:
        """Share of clean-correct examples found fooled at budget ``eps``."""
        if not self.minimal_eps:
            return 0.0
        return sum(value <= eps for value in self.minimal_eps) / len(self.minimal_eps)

    def possible_success_at(self, eps: float) -> float:
        """Share whose bracket does not rule out being fooled at ``eps`` (an upper bound)."""
        if not self.lower_eps:
            return 0.0
        return sum(value < eps for value in self.lower_eps) / len(self.lower_eps)

    def curve(self, grid: Sequence[float]) -> list[tuple[float, float, float]]:
        """(ε, success found, success possible) at every grid point."""
        return [(eps, self.success_at(eps), self.possible_success_at(eps)) for eps in grid]


@dataclass
class _Brackets:
    """One model's clean-correct examples and the bracket (low, upper] of each one's ε."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    correct: torch.Tensor
    low: torch.Tensor
    upper: torch.Tensor


def minimal_budgets(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    high: float,
    iterations: int,
    batch_size: int = 500,
) -> torch.Tensor:
    """Smallest ε in (0, high] at which ``attack`` fools each example, to high/2^iterations.

    Examples misclassified when clean get 0, examples not fooled at ``high`` get inf. The
    attack's own ε only fixes its step-size ratio α/ε; each call uses per-example radii.
    """
    (found,) = _bisect([model], x, y, attack, high, iterations, batch_size, None)
    result = torch.zeros(len(x))
    result[found.correct.cpu()] = found.upper.cpu()
    return result


def _bisect(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    high: float,
    iterations: int,
    batch_size: int,
    target_success: float | None,
) -> list[_Brackets]:
    """Halve the brackets ``iterations`` times: all of them, or (given ``target_success``)
    only those that can still move the pooled quantile at the target."""
    brackets = [_start(model, x, y, attack, high, batch_size) for model in models]
    for _ in range(iterations):
        undecided = [torch.isfinite(b.upper) for b in brackets]
        if target_success is not None:
            low_bound, high_bound = _quantile_bounds(brackets, target_success)
            undecided = [
                keep & (b.upper > low_bound) & (b.low < high_bound)
                for keep, b in zip(undecided, brackets, strict=True)
            ]
        for keep, b in zip(undecided, brackets, strict=True):
            chosen = keep.nonzero().flatten()
            for start in range(0, len(chosen), batch_size):
                index = chosen[start : start + batch_size]
                middle = (b.low[index] + b.upper[index]) / 2
                fooled = _fools(b.model, b.x[index], b.y[index], attack, middle)
                b.upper[index] = torch.where(fooled, middle, b.upper[index])
                b.low[index] = torch.where(fooled, b.low[index], middle)
    return brackets


def _start(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, high: float, batch_size: int
) -> _Brackets:
    """Brackets (0, high] for the examples fooled at ``high``, (high, inf] for the others."""
    with torch.no_grad(), eval_mode(model):
        correct = chunked_forward(model, x).argmax(dim=1) == y
    x, y = x[correct], y[correct]
    top = torch.full((len(x),), high, device=x.device)
    reachable = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for start in range(0, len(x), batch_size):
        part = slice(start, start + batch_size)
        reachable[part] = _fools(model, x[part], y[part], attack, top[part])
    low = torch.where(reachable, torch.zeros_like(top), top)
    upper = torch.where(reachable, top, torch.full_like(top, math.inf))
    return _Brackets(model, x, y, correct, low, upper)


def _quantile_bounds(brackets: Sequence[_Brackets], target_success: float) -> tuple[float, float]:
    """Bounds on the pooled target quantile of the minimal ε: the k-th smallest lower end and
    the k-th smallest upper end. Fewer than k brackets start below the first, so no smaller ε
    reaches the target; at least k end at or below the second, so it does."""
    lows = torch.cat([b.low for b in brackets])
    uppers = torch.cat([b.upper for b in brackets])
    return _target_quantile(lows, target_success), _target_quantile(uppers, target_success)


def _target_quantile(values: torch.Tensor, target_success: float) -> float:
    """The smallest value that at least ``target_success`` of ``values`` do not exceed (inf
    when there are none)."""
    needed = math.ceil(target_success * len(values))
    if not 0 < needed <= len(values):
        return math.inf
    return float(values.sort().values[needed - 1])


def _fools(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    eps: torch.Tensor,
) -> torch.Tensor:
    x_adv = attack.run(model, x, y, budgets=eps).x_adv
    with torch.no_grad(), eval_mode(model):
        fooled: torch.Tensor = chunked_forward(model, x_adv).argmax(dim=1) != y
    return fooled


def calibrate(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    target_success: float,
    high: float = 0.5,
    iterations: int = 7,
    batch_size: int = 500,
    refine: Refinement = "target",
) -> Calibration:
    """The ε at which ``attack``'s success rate, pooled over ``models``' clean-correct
    examples, first reaches ``target_success``. ``refine="all"`` halves every example's
    bracket, for a sharp curve at every ε; ``"target"`` only those that decide the answer."""
    brackets = _bisect(
        models,
        x,
        y,
        attack,
        high,
        iterations,
        batch_size,
        target_success if refine == "target" else None,
    )
    uppers = torch.cat([b.upper for b in brackets]).cpu()
    lows = torch.cat([b.low for b in brackets]).cpu()
    order = uppers.argsort(stable=True)
    values = [float(value) for value in uppers[order]]
    return Calibration(
        target_success=target_success,
        eps=_target_quantile(uppers, target_success),
        minimal_eps=values,
        lower_eps=[float(value) for value in lows[order]],
        resolution=high / 2**iterations,
    )
