"""Box-constrained L-BFGS: the attack that first showed adversarial examples exist.

Paper: Szegedy et al., "Intriguing properties of neural networks", ICLR 2014. Minimise
c·‖δ‖² + CE(f(x + δ), target) over x + δ ∈ [0, 1], searching c per example. Kept as a
historical baseline: CW-L2 solves the same trade-off better (margin loss, tanh box).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from robustlab.attacks.base import AttackContext, fooled
from robustlab.attacks.minimal import MinimalPerturbation, l2_distance
from robustlab.attacks.registry import register_attack
from robustlab.attacks.validation import check_count, check_range, check_steps


@register_attack
@dataclass(frozen=True, kw_only=True)
class LBFGS(MinimalPerturbation):
    """Szegedy et al.'s box-constrained L-BFGS attack with a search over c.

    Paper: Szegedy et al., "Intriguing properties of neural networks", 2014.
    Threat model: minimal L2 perturbation inside [0, 1]; no budget unless ``eps`` is set
    (then results larger than eps are replaced by the clean input).
    For each c, ``torch.optim.LBFGS`` (``steps`` iterations, strong-Wolfe line search)
    minimises c·‖δ‖² + CE(f(clamp(x + δ)), target). Clamping inside the objective makes the
    box constraint exact at the optimum: moving a coordinate outside [0, 1] only adds to
    ‖δ‖. The batch is one L-BFGS problem (the objective is a sum of per-example terms) with a
    separate c per example. c weighs the *distance* here, so the paper's line search for
    "the minimum c" becomes a search for the largest c whose minimiser still reaches the
    target: ``binary_search_steps`` values from ``initial_const``, ×10 or ÷10 until both a
    success and a failure are known, then geometric bisection. Each example keeps its
    smallest successful perturbation; one never successful is returned clean.
    Untargeted (the paper has only targeted): aim at the clean input's most likely wrong
    class and count any misclassification as success. With ``early_stop`` an example leaves
    the search at its first success.

    Example: ``x_adv = LBFGS(steps=20)(model, x, y, target=t)``
    """

    steps: int = 20
    binary_search_steps: int = 6
    initial_const: float = 0.1
    history: int = 10

    name: ClassVar[str] = "lbfgs"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self, "steps", self.steps)
        check_steps(self, "binary_search_steps", self.binary_search_steps)
        check_range(self, "initial_const", self.initial_const, minimum=0.0, inclusive=False)
        check_count(self, "history", self.history)

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        if target is None:
            with torch.no_grad():
                goal = context.logits(x).scatter(1, y[:, None], -torch.inf).argmax(dim=1)
        else:
            goal = target
        count = len(x)
        const = torch.full((count,), self.initial_const, device=x.device)
        lower = torch.zeros(count, device=x.device)  # largest c known to succeed (0: none)
        upper = torch.full((count,), math.inf, device=x.device)  # smallest c known to fail
        best = x.clone()
        best_distance = torch.full((count,), math.inf, device=x.device)
        active = torch.arange(count, device=x.device)
        for _ in range(self.binary_search_steps):
            if len(active) == 0:
                break
            x_adv = self._minimise(context, x[active], goal[active], const[active])
            with torch.no_grad():
                t = None if target is None else target[active]
                won = fooled(context.logits(x_adv), y[active], t)
                distance = l2_distance(x_adv, x[active])
            better = won & (distance < best_distance[active])
            best[active[better]] = x_adv[better]
            best_distance[active[better]] = distance[better]
            c = const[active]
            lower[active] = torch.where(won, torch.maximum(lower[active], c), lower[active])
            upper[active] = torch.where(won, upper[active], torch.minimum(upper[active], c))
            bracketed = (lower[active] > 0) & torch.isfinite(upper[active])
            const[active] = torch.where(
                bracketed,
                (lower[active] * upper[active]).sqrt(),
                torch.where(won, c * 10, c / 10),
            )
            if self.early_stop:
                active = active[~won]
        return self.keep_within_eps(x, best)

    def _minimise(
        self,
        context: AttackContext,
        x: torch.Tensor,
        goal: torch.Tensor,
        const: torch.Tensor,
    ) -> torch.Tensor:
        """One L-BFGS solve of c·‖δ‖² + CE toward ``goal``, started at δ = 0."""
        delta = torch.zeros_like(x, requires_grad=True)
        optimiser = torch.optim.LBFGS(
            [delta],
            lr=1.0,
            max_iter=self.steps,
            history_size=self.history,
            line_search_fn="strong_wolfe",
        )

        def objective() -> torch.Tensor:
            logits = context.logits((x + delta).clamp(0.0, 1.0))
            loss = const * delta.flatten(1).pow(2).sum(dim=1)
            loss = loss + F.cross_entropy(logits, goal, reduction="none")
            delta.grad = context.input_gradient(loss, delta)
            return loss.sum().detach()

        optimiser.step(objective)  # type: ignore[no-untyped-call]  # torch leaves it untyped
        return (x + delta).detach().clamp(0.0, 1.0)
