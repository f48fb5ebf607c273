"""Carlini & Wagner attacks: L2 (the original), L0 (built on it) and L∞ (Madry-style).

Paper: Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", 2017.
The L2 attack minimises ‖x' − x‖² + c·f(x') with x' = (tanh(w) + 1)/2, so Adam works on an
unconstrained w while x' stays in [0, 1]; f is the clipped logit margin and a binary search
per example finds the smallest c that still fools the model. It is a *minimal-perturbation*
attack: it has no budget unless ``eps`` is given (see ``robustlab.attacks.minimal``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch

from robustlab.attacks.base import Attack, AttackContext, fooled
from robustlab.attacks.iterative import PGD, LossName, NormName
from robustlab.attacks.losses import cw_margin
from robustlab.attacks.minimal import MinimalPerturbation
from robustlab.attacks.norms import per_example
from robustlab.attacks.registry import register_attack
from robustlab.attacks.validation import check_count, check_range, check_steps

NO_SUCCESS_YET = 1e10
"""Upper end of the binary search before any c has succeeded (the paper's sentinel)."""
TANH_SHRINK = 1 - 1e-6
"""atanh(±1) is infinite: pixels at exactly 0 or 1 start a hair inside the box."""
UNCHANGED = 1e-3
"""A pixel moved less than this is tanh round-off, not a use of that pixel (CW-L0)."""


class SearchResult(NamedTuple):
    """Per-example outcome of a CW-L2 search: best input, its L2 size and the c that won."""

    x_adv: torch.Tensor
    distance: torch.Tensor
    success: torch.Tensor
    const: torch.Tensor


@register_attack
@dataclass(frozen=True, kw_only=True)
class CW(MinimalPerturbation):
    """Carlini-Wagner L2: Adam in tanh space with a binary search over the constant c.

    Paper: Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", 2017.
    Threat model: minimal L2 perturbation inside [0, 1]; no budget unless ``eps`` is set
    (then results larger than eps are replaced by the clean input).
    Arguments: ``steps`` Adam steps at learning rate ``lr`` per value of c. The paper runs
    10000 steps at lr 0.01; in 100 such steps w moves at most 1, so pixels at 0 or 1 (w ≈ ∓7)
    cannot move and on MNIST two thirds of the examples are never fooled, hence lr 0.1 for
    the short default (within 5% of the paper's median L2 on MNIST). ``binary_search_steps``
    values of c per example, from ``initial_const`` (×10 until a success, then bisection);
    ``confidence`` κ, the logit margin the result must clear; ``abort_early`` ends a run
    whose total loss stopped falling (checked every steps/10, as the authors do). Each example
    keeps its smallest successful perturbation; one never fooled is returned clean. With
    ``early_stop`` an example leaves the search at its first success (faster, larger
    perturbations). Targeted with ``target=``.

    Example: ``x_adv = CW(steps=100, binary_search_steps=9)(model, x, y)``
    """

    steps: int = 100
    binary_search_steps: int = 9
    initial_const: float = 1e-3
    confidence: float = 0.0
    lr: float = 0.1
    abort_early: bool = True

    name: ClassVar[str] = "cw-l2"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self, "steps", self.steps)
        check_steps(self, "binary_search_steps", self.binary_search_steps)
        check_range(self, "initial_const", self.initial_const, minimum=0.0, inclusive=False)
        check_range(self, "confidence", self.confidence, minimum=0.0)
        check_range(self, "lr", self.lr, minimum=0.0, inclusive=False)

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        return self.keep_within_eps(x, self.search(context, x, y, target).x_adv)

    def search(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        *,
        allowed: torch.Tensor | None = None,
        initial_const: torch.Tensor | None = None,
    ) -> SearchResult:
        """The binary search over c; ``allowed`` (broadcast against x) freezes other pixels.

        Examples not fooled for any c come back clean with success False.
        """
        count = len(x)
        lower = torch.zeros(count, device=x.device)
        upper = torch.full((count,), NO_SUCCESS_YET, device=x.device)
        const = (
            torch.full((count,), self.initial_const, device=x.device)
            if initial_const is None
            else initial_const.clone()
        )
        best = x.clone()
        best_distance = torch.full((count,), math.inf, device=x.device)
        w_start = torch.atanh((2 * x - 1) * TANH_SHRINK)
        active = torch.arange(count, device=x.device)
        for _ in range(self.binary_search_steps):
            if len(active) == 0:
                break
            t = None if target is None else target[active]
            mask = None if allowed is None else allowed[active]
            run = self._optimise(
                context, x[active], y[active], t, w_start[active], const[active], mask
            )
            better = run.success & (run.distance < best_distance[active])
            best[active[better]] = run.x_adv[better]
            best_distance[active[better]] = run.distance[better]
            won = run.success
            c = const[active]
            upper[active] = torch.where(won, torch.minimum(upper[active], c), upper[active])
            lower[active] = torch.where(won, lower[active], torch.maximum(lower[active], c))
            bracketed = upper[active] < NO_SUCCESS_YET / 10
            const[active] = torch.where(bracketed, (lower[active] + upper[active]) / 2, c * 10)
            if self.early_stop:
                active = active[~won]
        success = torch.isfinite(best_distance)
        return SearchResult(best, best_distance, success, torch.where(success, upper, const))

    def _optimise(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        w_start: torch.Tensor,
        const: torch.Tensor,
        allowed: torch.Tensor | None,
    ) -> SearchResult:
        """``steps`` of Adam for one value of c per example; the smallest success is kept.

        Abort-early watches the batch's total loss, as the authors' code does: judged per
        example, Adam's normal wobble at short-run learning rates stops examples too soon.
        """
        w = w_start.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([w], lr=self.lr)
        best = x.clone()
        best_distance = torch.full((len(x),), math.inf, device=x.device)
        previous = math.inf
        check_every = max(self.steps // 10, 1)
        for step in range(self.steps):
            x_adv = (torch.tanh(w) + 1) / 2
            if allowed is not None:
                x_adv = torch.where(allowed, x_adv, x)
            logits = context.logits(x_adv)
            margin = cw_margin(logits, y, target)
            squared = (x_adv - x).flatten(1).pow(2).sum(dim=1)
            loss = squared + const * (-margin).clamp_min(-self.confidence)
            w.grad = context.input_gradient(loss, w)
            with torch.no_grad():
                won = fooled(logits, y, target) & (margin >= self.confidence)
                distance = squared.sqrt()
                better = won & (distance < best_distance)
                best[better] = x_adv[better]
                best_distance[better] = distance[better]
                if self.abort_early and step % check_every == 0:
                    total = loss.sum().item()
                    if total > previous * 0.9999:
                        break
                    previous = total
            optimiser.step()
        success = torch.isfinite(best_distance)
        return SearchResult(best, best_distance, success, const)


@register_attack
@dataclass(frozen=True, kw_only=True)
class CWLinf(PGD):
    """CW∞ as Madry et al. use it: L∞ PGD ascending the Carlini-Wagner logit margin.

    Paper: Carlini & Wagner 2017 (the margin loss); Madry et al. 2018 (PGD on it). This is
    *not* C&W's original iterative L∞ algorithm (shrinking τ with a penalty on pixels above
    it); it is the widely used budgeted substitute. Threat model: L∞ ball of radius ``eps``
    intersected with [0, 1]. Arguments as PGD (``eps``, ``alpha``, ``steps``,
    ``random_start``, ``restarts``); the norm and loss are fixed.

    Example: ``x_adv = CWLinf(eps=0.3, alpha=0.01, steps=40)(model, x, y)``
    """

    norm: NormName = field(default="linf", init=False)
    loss: LossName = field(default="cw", init=False)

    name: ClassVar[str] = "cw-linf"


@register_attack
@dataclass(frozen=True, kw_only=True)
class CWL0(Attack):
    """Carlini-Wagner L0: shrink the set of pixels the L2 attack may use until it fails.

    Paper: Carlini & Wagner 2017, section VI-A. Threat model: at most ``max_pixels`` pixel
    locations changed (all channels of a location count once), inside [0, 1].
    Each round runs the CW-L2 search restricted to the allowed pixels; when it succeeds,
    pixels it left (nearly) untouched and the ``fix_fraction`` of allowed pixels with the
    smallest |gradient · change| are frozen at their clean value, and the next round starts
    from the c that last worked. The paper freezes a few pixels per round; freezing a share
    makes the number of rounds logarithmic rather than linear in the image size (0 freezes
    one pixel per round; on MNIST 0.2 and 0.1 give medians of 6 and 7 pixels, the latter in
    twice the time). The last success is kept; an example whose last success changes more
    than ``max_pixels`` pixels comes back clean, so no result ever exceeds the budget.
    ``steps``, ``binary_search_steps``, ``initial_const``, ``confidence`` and ``lr`` configure
    each L2 search (short by default, with a large lr: many searches run). ``early_stop`` ends an
    example's rounds as soon as it is within the budget. Targeted with ``target=``.

    Example: ``x_adv = CWL0(max_pixels=20)(model, x, y)``
    """

    max_pixels: int = 20
    steps: int = 50
    binary_search_steps: int = 4
    initial_const: float = 1.0
    confidence: float = 0.0
    lr: float = 0.2
    fix_fraction: float = 0.2

    name: ClassVar[str] = "cw-l0"
    THREAT: ClassVar[str] = "l0"

    def __post_init__(self) -> None:
        check_count(self, "max_pixels", self.max_pixels)
        check_steps(self, "steps", self.steps)
        check_steps(self, "binary_search_steps", self.binary_search_steps)
        check_range(self, "initial_const", self.initial_const, minimum=0.0, inclusive=False)
        check_range(self, "confidence", self.confidence, minimum=0.0)
        check_range(self, "lr", self.lr, minimum=0.0, inclusive=False)
        check_range(self, "fix_fraction", self.fix_fraction, minimum=0.0, maximum=1.0)

    def _l2_attack(self) -> CW:
        return CW(
            steps=self.steps,
            binary_search_steps=self.binary_search_steps,
            initial_const=self.initial_const,
            confidence=self.confidence,
            lr=self.lr,
            precision=self.precision,
        )

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(
                f"CWL0 counts pixel locations: x must be (N, C, ...), got {tuple(x.shape)}"
            )
        l2_attack = self._l2_attack()
        count = len(x)
        pixel_shape = (count, 1, *x.shape[2:])  # one flag per location, shared by channels
        allowed = torch.ones(pixel_shape, dtype=torch.bool, device=x.device)
        best = x.clone()
        best_pixels = torch.full((count,), math.prod(x.shape[2:]) + 1.0, device=x.device)
        const = torch.full((count,), self.initial_const, device=x.device)
        active = torch.arange(count, device=x.device)
        while len(active) > 0:
            t = None if target is None else target[active]
            run = l2_attack.search(
                context,
                x[active],
                y[active],
                t,
                allowed=allowed[active],
                initial_const=const[active],
            )
            active = active[run.success]
            if len(active) == 0:
                break
            t = None if target is None else target[active]
            x_adv = self._snap(context, x[active], run.x_adv[run.success], y[active], t)
            best[active] = x_adv
            best_pixels[active] = _changed_pixels(x_adv - x[active]).float()
            const[active] = run.const[run.success]
            allowed[active] = self._freeze(context, x[active], x_adv, y[active], t, allowed[active])
            still_open = allowed[active].flatten(1).any(dim=1)
            if self.early_stop:
                still_open &= best_pixels[active] > self.max_pixels
            active = active[still_open]
        over_budget = best_pixels > self.max_pixels
        return torch.where(per_example(over_budget, x), x, best)

    def _snap(
        self,
        context: AttackContext,
        x: torch.Tensor,
        x_adv: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        """Reset pixels moved by less than ``UNCHANGED`` where the result stays adversarial."""
        moved = (x_adv - x).abs().amax(dim=1, keepdim=True) >= UNCHANGED
        snapped = torch.where(moved, x_adv, x)
        with torch.no_grad():
            logits = context.logits(snapped)
            keeps = fooled(logits, y, target) & (cw_margin(logits, y, target) >= self.confidence)
        return torch.where(per_example(keeps, x), snapped, x_adv)

    def _freeze(
        self,
        context: AttackContext,
        x: torch.Tensor,
        x_adv: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        allowed: torch.Tensor,
    ) -> torch.Tensor:
        """The allowed set for the next round: drop untouched and least useful pixels."""
        x_grad = x_adv.clone().requires_grad_(True)
        margin = cw_margin(context.logits(x_grad), y, target)
        grad = context.input_gradient(margin, x_grad)
        change = (x_adv - x).abs()
        usefulness = (grad.abs() * change).sum(dim=1, keepdim=True).flatten(1)
        moved = change.amax(dim=1, keepdim=True).flatten(1) >= UNCHANGED
        open_ = allowed.flatten(1) & moved
        candidates = open_.sum(dim=1)
        to_fix = (candidates.float() * self.fix_fraction).ceil().long().clamp_min(1)
        ranked = torch.where(open_, usefulness, torch.full_like(usefulness, math.inf))
        order = ranked.argsort(dim=1)
        rank = torch.empty_like(order)
        positions = torch.arange(order.shape[1], device=x.device).expand_as(order)
        rank.scatter_(1, order, positions)
        keep = open_ & (rank >= to_fix[:, None])
        return keep.reshape(allowed.shape)


def _changed_pixels(delta: torch.Tensor) -> torch.Tensor:
    """Per example, how many pixel locations differ in any channel."""
    return (delta.abs().amax(dim=1) > 0).flatten(1).sum(dim=1)
