"""Auto-PGD (Croce & Hein 2020): PGD that needs no step size, and its targeted DLR variant.

APGD starts with a large step (2ε) and halves it per example at checkpoints where progress
stalled, jumping back to the best point found so far; a momentum term of 0.75 smooths the
steps. This makes one fixed budget of iterations work across models without tuning, which is
what a reliable evaluation needs. The checkpoint rule and both halving conditions follow
Algorithm 1 and Section 3.2 of the paper.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from robustlab.attacks.base import Attack, AttackContext
from robustlab.attacks.losses import LOSSES, dlr
from robustlab.attacks.norms import Norm, get_norm
from robustlab.attacks.registry import register_attack
from robustlab.attacks.validation import check_count, check_eps, check_range, check_steps

APGDNorm = Literal["linf", "l2"]
_Batch = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"]
"""Clean inputs, labels, loss target and success target of one run."""
APGDLoss = Literal["ce", "dlr"]

MOMENTUM = 0.75
"""Weight of the new gradient step against the previous displacement (paper: α = 0.75)."""
INITIAL_STEP = 2.0
"""The first step size, in units of ε, before any halving."""


def checkpoints(steps: int) -> list[int]:
    """Iterations at which the step size is reconsidered: w_j = ⌈p_j · steps⌉, deduplicated.

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06): checks start far
    apart (explore) and come closer together as the run goes on (exploit).
    """
    fractions = [0.0, 0.22]
    while fractions[-1] < 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    points = {math.ceil(round(p * steps, 6)) for p in fractions[1:]}  # 0.57·100 is 57, not 58
    return sorted(point for point in points if 0 < point <= steps)


@dataclass
class _RunState:
    """Per-example state of one APGD run; every tensor has one row per example."""

    current: torch.Tensor
    previous: torch.Tensor
    grad: torch.Tensor
    loss: torch.Tensor
    best: torch.Tensor
    best_loss: torch.Tensor
    best_grad: torch.Tensor
    found: torch.Tensor
    found_point: torch.Tensor
    found_loss: torch.Tensor
    step: torch.Tensor
    increases: torch.Tensor
    best_loss_at_check: torch.Tensor
    halved_at_check: torch.Tensor


@register_attack
@dataclass(frozen=True, kw_only=True)
class APGD(Attack):
    """Auto-PGD: step-size-free PGD with momentum, checkpoints and step halving.

    Paper: Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks", ICML 2020.
    Threat model: ``norm`` ("linf" or "l2") ball of radius ``eps`` around x, within [0, 1].
    Arguments: ``steps`` iterations per run, ``restarts`` random starts (later ones only on
    examples not yet fooled), ``loss`` "ce" or "dlr" (targeted CE / targeted DLR when
    ``target=`` is given), ``rho`` the share of improving steps below which the step halves.
    Per example the returned point is the highest-loss fooling iterate if any, else the
    highest-loss iterate.

    Example: ``x_adv = APGD(eps=0.3, steps=100, loss="dlr")(model, x, y)``
    """

    eps: float = 0.3
    norm: APGDNorm = "linf"
    steps: int = 100
    restarts: int = 1
    loss: APGDLoss = "ce"
    rho: float = 0.75

    name: ClassVar[str] = "apgd"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"{owner}.norm must be 'linf' or 'l2', got {self.norm!r}")
        check_eps(self, self.eps, self.norm)
        check_steps(self, "steps", self.steps)
        check_count(self, "restarts", self.restarts)
        check_range(self, "rho", self.rho, minimum=0.0, maximum=1.0)
        if self.loss not in ("ce", "dlr"):
            raise ValueError(f"{owner}.loss must be 'ce' or 'dlr', got {self.loss!r}")

    @property
    def threat(self) -> str:
        return self.norm

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        def run_once(
            x_sub: torch.Tensor, y_sub: torch.Tensor, t_sub: torch.Tensor | None, _: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return self._run(context, x_sub, y_sub, t_sub, success_target=t_sub)

        return self._best_of_restarts(x, y, target, self.restarts, run_once)

    def _run(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        *,
        success_target: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run: (returned point, its loss, fooled) per example.

        ``target`` steers the loss; ``success_target`` decides what counts as fooled (None:
        misclassified), so APGD-T can ascend a targeted loss yet stop on any misclassification.
        """
        norm = get_norm(self.norm)
        start = (x + norm.random_start(x.shape, self.eps, context.generator, x.device)).clamp(0, 1)
        logits, loss, grad = self._evaluate(context, start, y, target, with_grad=self.steps > 0)
        won = context.success(logits, start, y, success_target)
        state = _RunState(
            current=start,
            previous=start.clone(),
            grad=grad,
            loss=loss,
            best=start.clone(),
            best_loss=loss.clone(),
            best_grad=grad.clone(),
            found=won,
            found_point=start.clone(),
            found_loss=torch.where(won, loss, torch.full_like(loss, float("-inf"))),
            step=torch.full((len(x),), INITIAL_STEP * self.eps, device=x.device),
            increases=torch.zeros(len(x), device=x.device),
            best_loss_at_check=loss.clone(),
            halved_at_check=torch.zeros(len(x), dtype=torch.bool, device=x.device),
        )
        marks = checkpoints(self.steps)
        windows = {mark: mark - before for before, mark in zip([0, *marks], marks, strict=False)}
        active = torch.arange(len(x), device=x.device)
        if self.early_stop:
            active = active[~won]
        for iteration in range(self.steps):
            if len(active) > 0:
                active = self._step(
                    context,
                    state,
                    norm,
                    (x, y, target, success_target),
                    active,
                    first=iteration == 0,
                    last=iteration == self.steps - 1,
                )
            window = windows.get(iteration + 1)
            if window is not None:
                self._checkpoint(state, window)
            if len(active) == 0:
                break
        point = torch.where(_rows(state.found, x), state.found_point, state.best)
        loss = torch.where(state.found, state.found_loss, state.best_loss)
        return point, loss, state.found

    def _step(
        self,
        context: AttackContext,
        state: _RunState,
        norm: Norm,
        batch: _Batch,
        active: torch.Tensor,
        *,
        first: bool,
        last: bool,
    ) -> torch.Tensor:
        """Move the active examples one momentum step; return the examples still active."""
        x, y, target, success_target = batch
        origin, current = x[active], state.current[active]
        with torch.no_grad():
            step = _rows(state.step[active], current)
            ascent = self._project(norm, origin, current + step * norm.steepest(state.grad[active]))
            if not first:
                moved = current + MOMENTUM * (ascent - current)
                moved = moved + (1 - MOMENTUM) * (current - state.previous[active])
                ascent = self._project(norm, origin, moved)
        t = None if target is None else target[active]
        logits, loss, grad = self._evaluate(context, ascent, y[active], t, with_grad=not last)
        with torch.no_grad():
            state.previous[active] = current
            state.current[active] = ascent
            state.grad[active] = grad
            state.increases[active] += (loss > state.loss[active]).float()
            state.loss[active] = loss
            improved = loss > state.best_loss[active]
            rows = active[improved]
            state.best[rows] = ascent[improved]
            state.best_loss[rows] = loss[improved]
            state.best_grad[rows] = grad[improved]
            s = None if success_target is None else success_target[active]
            won = context.success(logits, ascent, y[active], s)
            better_find = won & (~state.found[active] | (loss > state.found_loss[active]))
            rows = active[better_find]
            state.found_point[rows] = ascent[better_find]
            state.found_loss[rows] = loss[better_find]
            state.found[active[won]] = True
        return active[~won] if self.early_stop else active

    def _checkpoint(self, state: _RunState, window: int) -> None:
        """Halve the step where progress stalled, and restart those examples from their best.

        Condition 1: fewer than ``rho`` of the window's steps increased the loss. Condition 2:
        the step was not halved at the previous checkpoint and the best loss has not improved.
        """
        oscillating = state.increases < self.rho * window
        stuck = ~state.halved_at_check & (state.best_loss <= state.best_loss_at_check)
        halve = oscillating | stuck
        state.step[halve] /= 2
        state.current[halve] = state.best[halve]
        state.grad[halve] = state.best_grad[halve]
        state.loss[halve] = state.best_loss[halve]
        state.halved_at_check = halve
        state.best_loss_at_check = state.best_loss.clone()
        state.increases.zero_()

    def _project(self, norm: Norm, origin: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        return (origin + norm.project(point - origin, self.eps)).clamp(0.0, 1.0)

    def _evaluate(
        self,
        context: AttackContext,
        point: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        *,
        with_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, per-example loss and (unless ``with_grad`` is False: zeros) its gradient."""
        loss_fn = LOSSES.get(self.loss)
        if not with_grad:
            with torch.no_grad():
                logits = context.logits(point)
                return logits, loss_fn(logits, y, target), torch.zeros_like(point)
        point = point.detach().requires_grad_(True)
        logits = context.logits(point)
        loss = loss_fn(logits, y, target)
        grad = context.input_gradient(loss, point)
        return logits.detach(), loss.detach(), grad


@register_attack
@dataclass(frozen=True, kw_only=True)
class APGDT(APGD):
    """APGD-T: APGD on the targeted DLR loss toward each of the most likely wrong classes.

    Paper: Croce & Hein, ICML 2020 (the "APGD-T" of AutoAttack).
    Threat model: as ``APGD``. The targets are the clean input's ``target_classes`` highest
    scoring classes other than the label, tried in order, each with ``restarts`` runs on the
    examples not yet misclassified; the result is untargeted (any misclassification counts),
    so the attack picks its own targets and takes no ``target=``. Examples misclassified
    when clean are returned unchanged.

    Example: ``x_adv = APGDT(eps=0.3, steps=100, target_classes=9)(model, x, y)``
    """

    loss: APGDLoss = "dlr"
    target_classes: int = 9

    name: ClassVar[str] = "apgd-t"
    untargeted_only: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count(self, "target_classes", self.target_classes)

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        with torch.no_grad():
            clean = context.logits(x)
        ranked = clean.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
        count = min(self.target_classes, clean.shape[1] - 1)
        # One best-of loop over all attempts, target by target with ``restarts`` runs each:
        # the kept point, its margin and the fooled set carry over from target to target.
        attempt = itertools.count()

        def run_once(
            x_sub: torch.Tensor, y_sub: torch.Tensor, _: torch.Tensor | None, index: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            aim = ranked[index, next(attempt) // self.restarts]
            point, _loss, won = self._run(context, x_sub, y_sub, aim, success_target=None)
            with torch.no_grad():
                margin = dlr(context.logits(point), y_sub)
            return point, margin, won

        misclassified = clean.argmax(dim=1) != y
        return self._best_of_restarts(
            x, y, None, count * self.restarts, run_once, done=misclassified
        )


def _rows(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example vector shaped to broadcast against a batch shaped like ``like``."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))
