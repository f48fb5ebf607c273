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
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import torch

from robustlab.attacks.base import Attack, AttackContext
from robustlab.attacks.losses import LOSSES, dlr
from robustlab.attacks.norms import Norm, get_norm
from robustlab.attacks.registry import register_attack
from robustlab.attacks.validation import check_count, check_eps, check_range, check_steps

APGDNorm = Literal["linf", "l2"]
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
    """Per-example state of one APGD run, packed: row i of every tensor belongs to example
    ``rows[i]`` of the batch (``x``, ``y`` and the targets are packed alike).

    With early stopping a fooled example is written out and dropped (``keep``), so a step
    works on whole tensors: gathering and scattering the active rows of full-batch state at
    every step cost more than the model's own pass on small models and batches.
    """

    rows: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    success_target: torch.Tensor | None
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

    def keep(self, index: torch.Tensor) -> _RunState:
        """The state of rows ``index`` only."""
        kept: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            kept[field.name] = None if value is None else value[index]
        return _RunState(**kept)

    def returned(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: the highest-loss fooling point if one was found, else the highest-loss
        point, and its loss."""
        point = torch.where(_rows(self.found, self.x), self.found_point, self.best)
        loss = torch.where(self.found, self.found_loss, self.best_loss)
        return point, loss


@dataclass
class _RunResult:
    """One run's answer for the whole batch, filled as examples finish."""

    point: torch.Tensor
    loss: torch.Tensor
    found: torch.Tensor

    def write(self, state: _RunState) -> None:
        point, loss = state.returned()
        self.point[state.rows], self.loss[state.rows] = point, loss
        self.found[state.rows] = state.found


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
            rows=torch.arange(len(x), device=x.device),
            x=x,
            y=y,
            target=target,
            success_target=success_target,
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
        result = _RunResult(torch.empty_like(x), torch.empty_like(loss), won.clone())
        state = self._drop_fooled(state, won, result)
        marks = checkpoints(self.steps)
        windows = {mark: mark - before for before, mark in zip([0, *marks], marks, strict=False)}
        for iteration in range(self.steps):
            if len(state.rows) == 0:
                break
            won = self._step(
                context, state, norm, first=iteration == 0, last=iteration == self.steps - 1
            )
            state = self._drop_fooled(state, won, result)
            window = windows.get(iteration + 1)
            if window is not None and len(state.rows) > 0:
                self._checkpoint(state, window)
        result.write(state)
        return result.point, result.loss, result.found

    def _drop_fooled(self, state: _RunState, won: torch.Tensor, result: _RunResult) -> _RunState:
        """With ``early_stop``: write out the examples fooled this step and stop stepping them
        (their returned point can no longer change); otherwise the state as it is."""
        if not self.early_stop or not bool(won.any()):
            return state
        result.write(state.keep(won))
        return state.keep(~won)

    def _step(
        self,
        context: AttackContext,
        state: _RunState,
        norm: Norm,
        *,
        first: bool,
        last: bool,
    ) -> torch.Tensor:
        """Move every example of the state one momentum step; return which were fooled."""
        current = state.current
        with torch.no_grad():
            step = _rows(state.step, current)
            ascent = self._project(norm, state.x, current + step * norm.steepest(state.grad))
            if not first:
                moved = current + MOMENTUM * (ascent - current)
                moved = moved + (1 - MOMENTUM) * (current - state.previous)
                ascent = self._project(norm, state.x, moved)
        logits, loss, grad = self._evaluate(
            context, ascent, state.y, state.target, with_grad=not last
        )
        with torch.no_grad():
            state.previous, state.current, state.grad = current, ascent, grad
            state.increases += (loss > state.loss).float()
            state.loss = loss
            # Row selection by ``where``: masked assignment costs three operations (and a
            # synchronising nonzero) where one does.
            improved = loss > state.best_loss
            rows = _rows(improved, ascent)
            state.best = torch.where(rows, ascent, state.best)
            state.best_grad = torch.where(rows, grad, state.best_grad)
            state.best_loss = torch.where(improved, loss, state.best_loss)
            won = context.success(logits, ascent, state.y, state.success_target)
            better_find = won & (~state.found | (loss > state.found_loss))
            state.found_point = torch.where(_rows(better_find, ascent), ascent, state.found_point)
            state.found_loss = torch.where(better_find, loss, state.found_loss)
            state.found = state.found | won
        return won

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
