"""Iterative gradient attacks: PGD (Madry et al. 2018), BIM (Kurakin et al. 2017) and ILCM.

One loop serves them all: BIM is PGD without a random start; ILCM is BIM aimed at the class
the model finds least likely on the clean input. The norm supplies the start, the step
direction and the projection (see ``norms.py``).

For a single run (``restarts=1``) they are ``traceable``: ``run(..., trace=True)`` also returns
the fooled count after every step, the "attack statistics" of the thesis's Figure 5.2; and they
``accepts_budgets``: ``run(..., budgets=radii)`` gives every example its own radius, so one
batched call serves a per-example bisection for the smallest fooling ε.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from robustlab.attacks.base import Attack, AttackContext, AttackOutcome, fooled
from robustlab.attacks.losses import LOSSES
from robustlab.attacks.norms import get_norm, per_example
from robustlab.attacks.registry import register_attack
from robustlab.attacks.validation import check_count, check_eps, check_range, check_steps

LossName = Literal["ce", "cw", "dlr"]
NormName = Literal["linf", "l2", "l1"]


@register_attack
@dataclass(frozen=True, kw_only=True)
class PGD(Attack):
    """Projected gradient descent on a norm ball, with random start and restarts.

    Paper: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", 2018.
    Threat model: ``norm`` ball of radius ``eps`` around x, intersected with [0, 1].
    ``alpha`` is the step size in the norm's units (None: 2.5·eps/steps, Madry's rule); with
    several ``restarts`` each example keeps its most successful run. ``loss`` is what the
    steps ascend: cross-entropy, the CW margin or DLR.

    Example: ``x_adv = PGD(eps=0.3, alpha=0.01, steps=40)(model, x, y)``; the success after
    every step: ``PGD(eps=0.3).run(model, x, y, trace=True).trace``; example i in a ball of
    radius ``radii[i]``: ``PGD(eps=0.3).run(model, x, y, budgets=radii).x_adv`` (``eps`` then
    only sets the step size's ratio to the radius).
    """

    eps: float = 0.3
    alpha: float | None = None
    steps: int = 40
    norm: NormName = "linf"
    random_start: bool = True
    restarts: int = 1
    loss: LossName = "ce"

    name: ClassVar[str] = "pgd"
    traceable: ClassVar[bool] = True
    accepts_budgets: ClassVar[bool] = True

    def __post_init__(self) -> None:
        get_norm(self.norm)
        check_eps(self, self.eps, self.norm)
        if self.alpha is not None:
            check_range(self, "alpha", self.alpha, minimum=0.0, inclusive=False)
        check_steps(self, "steps", self.steps)
        check_count(self, "restarts", self.restarts)
        LOSSES.get(self.loss)

    @property
    def threat(self) -> str:
        return self.norm

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else 2.5 * self.eps / max(self.steps, 1)

    def _check_options(self, count: int, *, trace: bool, budgets: torch.Tensor | None) -> None:
        super()._check_options(count, trace=trace, budgets=budgets)
        owner = type(self).__name__
        if (trace or budgets is not None) and self.restarts != 1:
            raise ValueError(f"{owner} traces and takes budgets for one run: use restarts=1")
        if budgets is not None and self.eps <= 0:
            raise ValueError(f"{owner} scales the step by alpha/eps under budgets: use eps > 0")

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor | AttackOutcome:
        if self.restarts == 1:
            return self._run(context, x, y, target)
        loss_fn = LOSSES.get(self.loss)

        def run_once(
            x_sub: torch.Tensor, y_sub: torch.Tensor, t_sub: torch.Tensor | None, _: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            candidate = self._run(context, x_sub, y_sub, t_sub).x_adv
            with torch.no_grad():
                logits = context.logits(candidate)
                loss = loss_fn(logits, y_sub, t_sub)
                won = context.success(logits, candidate, y_sub, t_sub)
            return candidate, loss, won

        return self._best_of_restarts(x, y, target, self.restarts, run_once)

    def _run(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> AttackOutcome:
        loss_fn = LOSSES.get(self.loss)

        def objective(logits: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
            return loss_fn(logits, y[active], None if target is None else target[active])

        return self._ascend(context, x, y, target, objective, self._start(context, x))

    def _radii(self, context: AttackContext) -> float | torch.Tensor:
        """This call's radius: ``eps``, or the per-example radii passed as ``budgets``."""
        return self.eps if context.budgets is None else context.budgets

    def _start(self, context: AttackContext, x: torch.Tensor) -> torch.Tensor:
        eps = self._radii(context)
        if not self.random_start or (isinstance(eps, float) and eps == 0):
            return x.clone()
        norm = get_norm(self.norm)
        if isinstance(eps, torch.Tensor):  # balls scale linearly: a unit-ball point times eps
            delta = norm.random_start(x.shape, 1.0, context.generator, x.device)
            delta = delta * per_example(eps, delta)
        else:
            delta = norm.random_start(x.shape, eps, context.generator, x.device)
        return (x + delta).clamp(0.0, 1.0)

    def _ascend(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x_adv: torch.Tensor,
    ) -> AttackOutcome:
        """``steps`` projected steps up ``objective(logits, active_index)`` from ``x_adv``;
        fooled examples freeze with ``early_stop``. Records per-step success when traced."""
        norm = get_norm(self.norm)
        fooled_by_step: list[int] = []
        radii = self._radii(context)
        step_size: float | torch.Tensor = self.step_size
        if isinstance(radii, torch.Tensor):
            step_size = per_example(radii * (self.step_size / self.eps), x)
        active = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            if len(active) == 0:
                break
            x_active = x_adv[active].requires_grad_(True)
            y_active = y[active]
            t_active = None if target is None else target[active]
            logits = context.logits(x_active)
            grad = context.input_gradient(objective(logits, active), x_active)
            with torch.no_grad():
                if context.trace:
                    frozen = len(x) - len(active)
                    fooled_by_step.append(frozen + int(fooled(logits, y_active, t_active).sum()))
                if self.early_stop:
                    done = context.success(logits, x_active, y_active, t_active)
                    keep = ~done
                    active, x_active, grad = active[keep], x_active[keep], grad[keep]
                    if len(active) == 0:
                        break
                step: float | torch.Tensor = step_size
                eps: float | torch.Tensor = radii
                if isinstance(radii, torch.Tensor):
                    step, eps = step_size[active], radii[active]  # type: ignore[index]
                stepped = x_active + step * norm.steepest(grad)
                delta = norm.project(stepped - x[active], eps)
                x_adv[active] = (x[active] + delta).clamp(0.0, 1.0)
        if not context.trace:
            return AttackOutcome(x_adv=x_adv)
        trace = _complete_trace(context, x_adv, y, target, fooled_by_step, self.steps)
        return AttackOutcome(x_adv=x_adv, trace=trace)


def _complete_trace(
    context: AttackContext,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    fooled_by_step: list[int],
    steps: int,
) -> torch.Tensor:
    """Fooled counts after 0..steps steps; steps skipped because all were fooled repeat."""
    with torch.no_grad():
        final = int(fooled(context.logits(x_adv), y, target).sum())
    counts = [*fooled_by_step, final]
    counts += [final] * (steps + 1 - len(counts))
    return torch.tensor(counts[: steps + 1])


@register_attack
@dataclass(frozen=True, kw_only=True)
class BIM(PGD):
    """Basic iterative method / I-FGSM: L∞ steps clipped to the ε-ball and [0, 1].

    Paper: Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world", 2017.
    It is PGD from the clean input (no random start); ``alpha`` defaults to eps/steps, so the
    last step can reach the edge of the ball.
    """

    steps: int = 10
    random_start: bool = False

    name: ClassVar[str] = "bim"

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else self.eps / max(self.steps, 1)


@register_attack
@dataclass(frozen=True, kw_only=True)
class ILCM(BIM):
    """Iterative least-likely class method: targeted BIM toward the least-likely class.

    Paper: Kurakin, Goodfellow & Bengio 2017. The target of each example is the class the model
    finds least likely on the clean input, so the caller passes no ``target``.
    """

    name: ClassVar[str] = "ilcm"
    untargeted_only: ClassVar[bool] = True

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor | AttackOutcome:
        with torch.no_grad():
            least_likely = context.logits(x).argmin(dim=1)
        return super()._perturb(context, x, y, least_likely)


@register_attack
@dataclass(frozen=True, kw_only=True)
class PGDKL(PGD):
    """PGD ascending KL(f(x) ‖ f(x')): the inner maximisation of TRADES.

    Paper: Zhang et al., "Theoretically Principled Trade-off between Robustness and
    Accuracy", ICML 2019. It needs no labels: it pushes the prediction away from the clean
    one. As in the authors' code it starts at x + 0.001·N(0, I) (``random_start=False``:
    at x, where the KL gradient is zero) and uses the L∞ defaults ε=0.3, α=0.01, 40 steps.
    """

    alpha: float | None = 0.01
    random_start: bool = True

    name: ClassVar[str] = "pgd-kl"
    untargeted_only: ClassVar[bool] = True

    def _run(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> AttackOutcome:
        with torch.no_grad():
            clean = F.softmax(context.logits(x), dim=1)

        def divergence(logits: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
            log_adv = F.log_softmax(logits, dim=1)
            return F.kl_div(log_adv, clean[active], reduction="none").sum(dim=1)

        return self._ascend(context, x, y, None, divergence, self._start(context, x))

    def _start(self, context: AttackContext, x: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        noise = torch.randn(x.shape, generator=context.generator, device=x.device)
        delta = get_norm(self.norm).project(0.001 * noise, self.eps)
        return (x + delta).clamp(0.0, 1.0)
