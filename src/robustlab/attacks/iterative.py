"""Iterative gradient attacks: PGD (Madry et al. 2018), BIM (Kurakin et al. 2017) and ILCM.

One loop serves them all: BIM is PGD without a random start; ILCM is BIM aimed at the class
the model finds least likely on the clean input. The norm supplies the start, the step
direction and the projection (see ``norms.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from robustlab.attacks.base import Attack, AttackContext, fooled
from robustlab.attacks.losses import LOSSES
from robustlab.attacks.norms import get_norm
from robustlab.attacks.registry import register_attack
from robustlab.attacks.validation import check_range

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

    Example: ``x_adv = PGD(eps=0.3, alpha=0.01, steps=40)(model, x, y)``
    """

    eps: float = 0.3
    alpha: float | None = None
    steps: int = 40
    norm: NormName = "linf"
    random_start: bool = True
    restarts: int = 1
    loss: LossName = "ce"

    name: ClassVar[str] = "pgd"

    def __post_init__(self) -> None:
        check_range(self, "eps", self.eps, minimum=0.0)
        if self.alpha is not None:
            check_range(self, "alpha", self.alpha, minimum=0.0, inclusive=False)
        check_range(self, "steps", self.steps, minimum=0)
        check_range(self, "restarts", self.restarts, minimum=1)
        get_norm(self.norm)
        LOSSES.get(self.loss)

    @property
    def threat(self) -> str:
        return self.norm

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else 2.5 * self.eps / max(self.steps, 1)

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.restarts == 1:
            return self._run(context, x, y, target)
        best = x.clone()
        best_loss = torch.full((len(x),), float("-inf"), device=x.device)
        succeeded = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        loss_fn = LOSSES.get(self.loss)
        for _ in range(self.restarts):
            todo = (~succeeded).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            t = None if target is None else target[todo]
            candidate = self._run(context, x[todo], y[todo], t)
            with torch.no_grad():
                logits = context.logits(candidate)
                loss = loss_fn(logits, y[todo], t)
                won = fooled(logits, y[todo], t)
            better = won | (loss > best_loss[todo])
            best[todo[better]] = candidate[better]
            best_loss[todo[better]] = loss[better]
            succeeded[todo[won]] = True
        return best

    def _run(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        """One run of ``steps`` projected steps; fooled examples freeze with ``early_stop``."""
        norm = get_norm(self.norm)
        loss_fn = LOSSES.get(self.loss)
        if self.random_start and self.eps > 0:
            delta = norm.random_start(x.shape, self.eps, context.generator, x.device)
            x_adv = (x + delta).clamp(0.0, 1.0)
        else:
            x_adv = x.clone()
        active = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            if len(active) == 0:
                break
            x_active = x_adv[active].requires_grad_(True)
            y_active = y[active]
            t_active = None if target is None else target[active]
            logits = context.logits(x_active)
            grad = context.input_gradient(loss_fn(logits, y_active, t_active), x_active)
            with torch.no_grad():
                if self.early_stop:
                    done = fooled(logits, y_active, t_active)
                    if self.precision != "fp32" and bool(done.any()):
                        index = done.nonzero().squeeze(1)
                        t_done = None if t_active is None else t_active[index]
                        done[index] = context.confirmed_fooled(
                            x_active[index].detach(), y_active[index], t_done
                        )
                    keep = ~done
                    active, x_active, grad = active[keep], x_active[keep], grad[keep]
                    if len(active) == 0:
                        break
                stepped = x_active + self.step_size * norm.steepest(grad)
                delta = norm.project(stepped - x[active], self.eps)
                x_adv[active] = (x[active] + delta).clamp(0.0, 1.0)
        return x_adv


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
    ) -> torch.Tensor:
        with torch.no_grad():
            least_likely = context.logits(x).argmin(dim=1)
        return super()._perturb(context, x, y, least_likely)
