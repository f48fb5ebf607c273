"""Find the budget at which an attack reaches a given success rate.

The thesis reports "ε = 8" without a scale, and 8/255 is far too weak on MNIST to give its
56% success before adversarial training. Calibration makes the interpretation explicit: for
every example a batched bisection finds the smallest ε at which the attack (PGD-200 by
default) fools the model; the success rate at any ε is then the share of examples whose
smallest ε is at most that, and the calibrated ε is where that curve crosses the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robustlab.attacks.iterative import PGD
from robustlab.batching import chunked_forward
from robustlab.modes import eval_mode


@dataclass(frozen=True)
class Calibration:
    """Per-example smallest fooling ε, pooled over models, and the ε at the target success."""

    target_success: float
    eps: float
    """Smallest ε whose pooled success rate reaches the target (inf if none up to ``high``)."""
    minimal_eps: list[float]
    """For every clean-correct example of every model: its smallest fooling ε (inf: none)."""
    resolution: float

    def success_at(self, eps: float) -> float:
        """Share of clean-correct examples fooled at budget ``eps`` (from the bisection)."""
        if not self.minimal_eps:
            return 0.0
        return sum(value <= eps for value in self.minimal_eps) / len(self.minimal_eps)

    def curve(self, grid: Sequence[float]) -> list[tuple[float, float]]:
        return [(eps, self.success_at(eps)) for eps in grid]


def minimal_budgets(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: PGD,
    *,
    high: float,
    iterations: int,
    batch_size: int = 500,
) -> torch.Tensor:
    """Smallest ε in (0, high] at which ``attack`` fools each example, to high/2^iterations.

    Examples misclassified when clean get 0, examples not fooled at ``high`` get inf. The
    attack's own ε only fixes its step-size ratio α/ε; each call uses per-example radii.
    """
    found = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        found.append(_bisect(model, xb, yb, attack, high, iterations))
    return torch.cat(found) if found else torch.zeros(0)


def _bisect(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: PGD, high: float, iterations: int
) -> torch.Tensor:
    with torch.no_grad(), eval_mode(model):
        correct = chunked_forward(model, x).argmax(dim=1) == y
    result = torch.zeros(len(x))
    x, y = x[correct], y[correct]
    low = torch.zeros(len(x), device=x.device)
    upper = torch.full((len(x),), high, device=x.device)
    reachable = _fools(model, x, y, attack, upper)
    for _ in range(iterations):
        middle = (low + upper) / 2
        fooled = _fools(model, x, y, attack, middle)
        upper = torch.where(fooled, middle, upper)
        low = torch.where(fooled, low, middle)
    found = torch.where(reachable, upper, torch.full_like(upper, math.inf))
    result[correct.cpu()] = found.cpu()
    return result


def _fools(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: PGD, eps: torch.Tensor
) -> torch.Tensor:
    x_adv = attack.with_budgets(model, x, y, eps)
    with torch.no_grad(), eval_mode(model):
        fooled: torch.Tensor = chunked_forward(model, x_adv).argmax(dim=1) != y
    return fooled


def calibrate(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    attack: PGD,
    *,
    target_success: float,
    high: float = 0.5,
    iterations: int = 7,
    batch_size: int = 500,
) -> Calibration:
    """The ε at which ``attack``'s success rate, pooled over ``models``' clean-correct
    examples, first reaches ``target_success``."""
    pooled: list[float] = []
    for model in models:
        budgets = minimal_budgets(
            model, x, y, attack, high=high, iterations=iterations, batch_size=batch_size
        )
        pooled += [float(value) for value in budgets if value > 0]  # 0: wrong when clean
    values = sorted(pooled)
    needed = math.ceil(target_success * len(values))
    eps = values[needed - 1] if 0 < needed <= len(values) else math.inf
    return Calibration(
        target_success=target_success,
        eps=eps,
        minimal_eps=values,
        resolution=high / 2**iterations,
    )
