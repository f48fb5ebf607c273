"""The attack contract, enforced once for every attack.

An attack is a frozen, keyword-only value holding its hyper-parameters. ``attack.run(model,
x, y)`` returns an ``AttackOutcome``: the adversarial batch plus whatever the attack measured
on the way (the per-step success ``trace``, per-example ``queries``, AutoAttack's
``cascade``); calling the attack returns the batch alone. ``Attack.run`` is final in spirit:
subclasses implement ``_perturb`` only (returning the batch, or an outcome with extras), and
the base class

* checks inputs (pixels in [0, 1], labels and targets the right shape),
* runs the model in eval mode and restores every submodule's mode afterwards,
* never touches parameters: gradients are taken with ``torch.autograd.grad`` with respect to
  the input only, so ``p.grad`` and ``requires_grad`` flags stay exactly as they were (the same
  attack object runs inside adversarial training, with a training gradient pending),
* seeds a private generator, so an attack is reproducible and does not disturb global RNGs,
* clips the result into the threat model's ball and the [0, 1] box, whatever ``_perturb`` did,
* refuses per-call options the attack does not declare (``traceable``, ``accepts_budgets``),
* refuses a radius larger than the input box (``check_budget``: ε above 1 for L∞, above √d
  for L2, above d for L1, on d input values), which no constructor can know before the batch.

Every constructor refuses a budget that cannot change the input (ε <= 0, fewer than one step):
such an attack's "robust accuracy" would be the clean accuracy, reported as a finding.

Per-call options travel on the ``AttackContext`` that ``_perturb`` receives, and extras come
back in the outcome, so nothing is passed through global or context-local state.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from robustlab.attacks.norms import get_norm
from robustlab.attacks.validation import BudgetError, ball_diameter
from robustlab.batching import chunked_forward
from robustlab.modes import eval_mode
from robustlab.precision import Precision, autocast

if TYPE_CHECKING:
    from robustlab.attacks.autoattack import CascadeRecord

RunOnce = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor],
]
"""One restart on a sub-batch: (x, y, target, index of those rows in the batch) to
(point, loss, fooled) per row; see ``Attack._best_of_restarts``."""


@dataclass(frozen=True)
class AttackOutcome:
    """The adversarial batch and the extras the attack was asked for or always reports."""

    x_adv: torch.Tensor
    trace: torch.Tensor | None = None
    """With ``run(..., trace=True)``: examples fooled after 0, 1, ..., steps steps."""
    queries: torch.Tensor | None = None
    """Model queries each example used (query-counting attacks such as Square)."""
    cascade: CascadeRecord | None = None
    """AutoAttack's per-member counts and timings."""


@dataclass(frozen=True)
class AttackContext:
    """What ``_perturb`` gets besides the batch: the model and how to call it."""

    model: nn.Module
    generator: torch.Generator
    precision: Precision
    trace: bool = False
    """Record the fooled count after every step (only attacks that declare ``traceable``)."""
    budgets: torch.Tensor | None = None
    """Per-example radii replacing ``eps`` (only attacks that declare ``accepts_budgets``)."""
    reference: nn.Module | None = None
    """The model whose answer decides success when ``model`` is a faster stand-in that
    matches it only to float rounding (``robustlab.batching.forward_only_view``)."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Model output as float32 logits, under bf16 autocast when asked."""
        with autocast(x.device, self.precision):
            output = chunked_forward(self.model, x)
        return output.float()

    def confirmed_fooled(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Success judged in full precision by the reference model: under bf16 or a stand-in
        a borderline example can look fooled when it is not, and an attack must not stop
        early on such an example."""
        judge = self.model if self.reference is None else self.reference
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            return fooled(chunked_forward(judge, x).float(), y, target)

    def success(
        self,
        logits: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        """Per-example success of inputs ``x`` whose ``logits`` came from ``self.logits``:
        under bf16 every claimed success is re-checked in fp32 (cheap: only the hits are
        re-run), so attacks that stop on success never stop on a false one; so is every
        success of a stand-in model, with the ``reference`` model."""
        won = fooled(logits, y, target)
        exact = self.precision == "fp32" and self.reference is None
        if not exact and bool(won.any()):
            index = won.nonzero().squeeze(1)
            chosen = None if target is None else target[index]
            won[index] = self.confirmed_fooled(x[index].detach(), y[index], chosen)
        return won

    def input_gradient(self, loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """d(sum of per-example losses)/dx, without touching any parameter's gradient."""
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return grad


@dataclass(frozen=True, kw_only=True)
class Attack(ABC):
    """Base class: subclasses declare hyper-parameters as fields and implement ``_perturb``."""

    seed: int = 0
    early_stop: bool = False
    """Stop updating examples as soon as they are fooled (or reach their target)."""
    precision: Precision = "fp32"

    name: ClassVar[str] = ""
    THREAT: ClassVar[str] = "linf"
    targeted_only: ClassVar[bool] = False
    untargeted_only: ClassVar[bool] = False
    traceable: ClassVar[bool] = False
    """``run(..., trace=True)`` is supported: the attack counts fooled examples per step."""
    accepts_budgets: ClassVar[bool] = False
    """``run(..., budgets=radii)`` is supported: one radius per example instead of ``eps``."""

    @property
    def threat(self) -> str:
        """Norm of the budget: linf, l2, l1, l0, or "none" for minimal-perturbation attacks."""
        return self.THREAT

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The adversarial batch alone: ``run(model, x, y, target=target).x_adv``."""
        return self.run(model, x, y, target=target).x_adv

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | None = None,
        trace: bool = False,
        budgets: torch.Tensor | None = None,
    ) -> AttackOutcome:
        """Attack the batch and return the adversarial inputs with the attack's extras.

        ``trace``: also count fooled examples after every step (``traceable`` attacks);
        ``budgets``: radius ``budgets[i]`` for example i instead of ``eps`` (attacks that
        ``accepts_budgets``). One batched call with per-example radii serves a bisection
        for each example's smallest fooling ε.
        """
        _check_batch(x, y, target)
        if target is None and self.targeted_only:
            raise ValueError(f"{type(self).__name__} is a targeted attack: pass target=")
        if target is not None and self.untargeted_only:
            raise ValueError(f"{type(self).__name__} has no targeted variant")
        self._check_options(len(x), trace=trace, budgets=budgets)
        self.check_budget(x.shape[1:], budgets)
        if budgets is not None:
            budgets = budgets.to(x.device, torch.float32)
        x = x.detach()
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        with eval_mode(model), torch.enable_grad():
            context = AttackContext(
                model=model,
                generator=generator,
                precision=self.precision,
                trace=trace,
                budgets=budgets,
            )
            result = self._perturb(context, x, y.detach(), target)
        outcome = result if isinstance(result, AttackOutcome) else AttackOutcome(x_adv=result)
        x_adv = self.within_budget(x, outcome.x_adv.detach(), budgets)
        return dataclasses.replace(outcome, x_adv=x_adv)

    def _check_options(self, count: int, *, trace: bool, budgets: torch.Tensor | None) -> None:
        """Refuse, before any work, per-call options this attack cannot honour."""
        owner = type(self).__name__
        if trace and not self.traceable:
            raise ValueError(f"{owner} does not trace its success per step: drop trace=True")
        if budgets is None:
            return
        if not self.accepts_budgets:
            raise ValueError(f"{owner} takes no per-example budgets: drop budgets=")
        if budgets.shape != (count,) or bool((budgets < 0).any()):
            raise ValueError(
                f"budgets must hold {count} radii >= 0, got shape {tuple(budgets.shape)}"
            )

    def check_budget(self, input_shape: Sequence[int], budgets: torch.Tensor | None = None) -> None:
        """Refuse a radius (``eps``, or the largest of ``budgets``) beyond the diameter of the
        [0, 1] box of inputs shaped ``input_shape`` (one example): it would constrain nothing.

        ``run`` calls it on every batch; evaluations call it for every attack before the
        first one runs, so a bad budget is refused before any work.
        """
        features = math.prod(int(size) for size in input_shape)
        diameter = ball_diameter(self.threat, features)
        if diameter is None:
            return
        owner = type(self).__name__
        radii = {f"{owner}.eps": self.budget}
        if budgets is not None and len(budgets):
            radii[f"{owner}'s largest per-example budget"] = float(budgets.max())
        for what, radius in radii.items():
            if radius is not None and radius > diameter * (1 + 1e-6):
                raise BudgetError(_too_large(what, radius, self.threat, diameter, features))

    @abstractmethod
    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor | AttackOutcome:
        """Return adversarial inputs for ``x`` (with extras: an ``AttackOutcome``); the caller
        enforces box and budget."""

    def _best_of_restarts(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        restarts: int,
        run_once: RunOnce,
        *,
        done: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Up to ``restarts`` runs of ``run_once``, each only on the examples not yet fooled
        (``done`` marks those that need none); per example, keep a fooling point if one was
        found, else the highest-loss point (the clean input if none ran)."""
        best = x.clone()
        best_loss = torch.full((len(x),), float("-inf"), device=x.device)
        if done is None:
            succeeded = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        else:
            succeeded = done.clone()
        for _ in range(restarts):
            todo = (~succeeded).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            t = None if target is None else target[todo]
            point, loss, won = run_once(x[todo], y[todo], t, todo)
            better = won | (loss > best_loss[todo])
            best[todo[better]] = point[better]
            best_loss[todo[better]] = loss[better]
            succeeded[todo[won]] = True
        return best

    @property
    def budget(self) -> float | None:
        """The norm bound ε, or None for minimal-perturbation attacks."""
        eps = getattr(self, "eps", None)
        return None if eps is None else float(eps)

    def within_budget(
        self, x: torch.Tensor, x_adv: torch.Tensor, budgets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x_adv`` moved into the [0, 1] box and the ball of radius ``eps`` (or of
        ``budgets[i]`` per example) around ``x``."""
        delta = x_adv - x
        eps: float | torch.Tensor | None = self.budget if budgets is None else budgets
        if eps is not None and self.threat in ("linf", "l2", "l1"):
            delta = get_norm(self.threat).project(delta, eps)
        return (x + delta).clamp(0.0, 1.0)

    def describe(self) -> dict[str, object]:
        """Hyper-parameters for result files: every field plus the attack's name and threat."""
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {"attack": self.name or type(self).__name__, "threat": self.threat, **fields}


def fooled(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-example success: misclassified (untargeted) or classified as the target."""
    predicted = logits.argmax(dim=1)
    return predicted != y if target is None else predicted == target


def _too_large(what: str, value: float, norm: str, diameter: float, features: int) -> str:
    bound = {"linf": "1", "l2": f"√{features} = {diameter:.4g}", "l1": f"{features}"}[norm]
    return (
        f"{what} = {value:g} is larger than any {norm} distance between two inputs of "
        f"{features} values in [0, 1] (at most {bound}), so it constrains nothing: use a "
        "smaller budget"
    )


def _check_batch(x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
    if not torch.is_floating_point(x):
        raise TypeError(f"x must be a floating-point tensor of pixels in [0, 1], got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must be a batch (N, ...), got shape {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if target is not None and target.shape != y.shape:
        raise ValueError(f"target must have shape {tuple(y.shape)}, got {tuple(target.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"x must be pixels in [0, 1] (normalisation is the model's first layer); got "
            f"values in [{x.min().item():.3g}, {x.max().item():.3g}]"
        )
