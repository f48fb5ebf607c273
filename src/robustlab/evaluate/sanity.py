"""Sanity checks that run with every defense evaluation (Carlini et al. 2019, "On Evaluating
Adversarial Robustness"; Athalye et al. 2018).

A robustness figure is only as good as the attack behind it. Each check re-attacks the first
``images`` evaluated examples in a way that must not do *better* than the evaluated plan if
its gradients are sound, or probes the gradients directly:

* ``gradients``: input gradients of the attacked loss that are zero or not finite on a large
  share of clean inputs (a saturated softmax, a codec outside autograd) cannot guide an attack;
* ``stochastic``: two gradients at the same input point different ways (a randomised defense
  attacked without EOT);
* ``unbounded``: with ε the whole input box, a working attack reaches ~0% accuracy;
* ``more steps``: twice the steps must not leave the model *more* robust (a weaker attack
  with more steps means a broken loss landscape), nor much less (the attack had not converged);
* ``black box``: Square, which uses no gradient, must not beat the white-box attack;
* ``transfer``: examples made on an undefended surrogate must not beat the white-box attack.

A failed check names itself and what to try next; the evaluation it belongs to is flagged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.base import Attack
from robustlab.attacks.losses import LOSSES
from robustlab.attacks.registry import build_attack
from robustlab.attacks.validation import ball_diameter
from robustlab.defenses import gradient_view
from robustlab.evaluate.defended import AttackPlan, evaluate_plan, seeded
from robustlab.modes import eval_mode


@dataclass(frozen=True)
class CheckSettings:
    enabled: bool = True
    images: int = 200
    max_zero_gradients: float = 0.3
    """Flag when more than this share of inputs has a zero or non-finite input gradient."""
    min_gradient_cosine: float = 0.9
    max_unbounded_accuracy: float = 0.1
    tolerance: float = 0.02
    """Accuracy differences within max(this, 2 images) count as noise."""
    square_queries: int = 1000


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    measured: str
    advice: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: AttackPlan,
    robust: torch.Tensor,
    *,
    settings: CheckSettings,
    surrogate: nn.Module | None = None,
    seed: int = 0,
    batch_size: int = 500,
    own: torch.Tensor | None = None,
    black_box_memo: dict[tuple[float, str], float] | None = None,
) -> list[Check]:
    """The checks for ``plan``, whose reported per-example result on ``x`` was ``robust``.

    ``own``: the plan's result alone, when ``robust`` is a worst case over several attacks;
    the steps check compares the plan with itself, the black-box and transfer checks with
    the reported figure. ``black_box_memo``: Square's accuracy by (ε, norm), shared by the
    checks of several plans on the same model, images and seed: Square takes no gradient, so
    its answer does not depend on the plan, and on a slow defense it is the costliest check.
    """
    if not settings.enabled:
        return []
    count = min(settings.images, len(x))
    x, y = x[:count], y[:count]
    base = float(robust[:count].float().mean())
    alone = base if own is None else float(own[:count].float().mean())
    tolerance = max(settings.tolerance, 2 / count)

    def accuracy(other: AttackPlan, attacked: nn.Module | None = None) -> float:
        scored = evaluate_plan(
            model, x, y, other, batch_size=batch_size, seed=seed, attacked_model=attacked
        )
        return scored.robust_accuracy

    checks = [_gradient_check(model, x, y, plan, settings, seed)]
    if getattr(model, "randomized", False):
        checks.append(_stochastic_check(model, x, y, plan, settings, seed))
    checks.append(_unbounded_check(accuracy, plan, x, settings))
    checks.append(_steps_check(accuracy, plan, alone, tolerance))
    eps, norm = _eps(plan.attack), "l2" if plan.attack.threat == "l2" else "linf"
    memo = {} if black_box_memo is None else black_box_memo
    if (eps, norm) not in memo:
        square = build_attack(
            "square", eps=eps, norm=norm, queries=settings.square_queries, seed=seed
        )
        memo[eps, norm] = accuracy(AttackPlan(attack=square))
    black_box = memo[eps, norm]
    checks.append(
        _not_better(
            "black box",
            f"Square ({settings.square_queries} queries)",
            black_box,
            base,
            tolerance,
            "a gradient-free attack beats the white-box one: the gradients are masked; try "
            "BPDA for non-differentiable parts, EOT for randomness, a CW margin loss for "
            "saturated softmax",
        )
    )
    if surrogate is not None:
        transfer = accuracy(AttackPlan(attack=plan.attack), attacked=surrogate)
        checks.append(
            _not_better(
                "transfer",
                "the same attack on the undefended surrogate",
                transfer,
                base,
                tolerance,
                "examples made on an undefended model beat the white-box attack on the "
                "defense: its gradients mislead; attack it adaptively (BPDA / EOT / CW loss)",
            )
        )
    return checks


def _eps(attack: Attack) -> float:
    budget = attack.budget
    if budget is None:
        raise ValueError(f"sanity checks need a norm-bounded attack, got {attack.name!r}")
    return budget


def _gradient_check(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: AttackPlan,
    settings: CheckSettings,
    seed: int,
) -> Check:
    grads = _input_gradients(model, x, y, plan, seed)
    flat = grads.flatten(1)
    dead = (flat.abs().amax(dim=1) == 0) | ~torch.isfinite(flat).all(dim=1)
    share = float(dead.float().mean())
    return Check(
        name="gradients",
        passed=share <= settings.max_zero_gradients,
        measured=f"{share:.0%} of inputs have a zero or non-finite input gradient",
        advice=""
        if share <= settings.max_zero_gradients
        else "the attacked loss gives no gradient: use BPDA through non-differentiable "
        "transforms, or the CW margin loss where the softmax saturates",
    )


def _stochastic_check(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: AttackPlan,
    settings: CheckSettings,
    seed: int,
) -> Check:
    first = _input_gradients(model, x, y, plan, seed).flatten(1)
    second = _input_gradients(model, x, y, plan, seed + 1).flatten(1)
    cosine = F.cosine_similarity(first, second, dim=1).nan_to_num(0.0)
    median = float(cosine.median())
    passed = median >= settings.min_gradient_cosine
    return Check(
        name="stochastic",
        passed=passed,
        measured=f"median cosine {median:.2f} between two gradients at the same input",
        advice="" if passed else "the defense is random: average gradients over it (EOT)",
    )


def _unbounded_check(
    accuracy: Any, plan: AttackPlan, x: torch.Tensor, settings: CheckSettings
) -> Check:
    diameter = ball_diameter(plan.attack.threat, math.prod(x.shape[1:]))
    if diameter is None:
        return Check("unbounded", True, "not applicable to this threat model")
    attack = _scaled_budget(plan.attack, diameter)
    value = accuracy(dataclasses.replace(plan, attack=attack))
    passed = value <= settings.max_unbounded_accuracy
    return Check(
        name="unbounded",
        passed=passed,
        measured=f"{value:.1%} accuracy at ε = {diameter:.3g} (the whole input box)",
        advice=""
        if passed
        else "an unbounded attack must reach ~0%: the attack is not following a useful "
        "gradient (try BPDA, EOT, the CW loss) or has too few steps",
    )


def _steps_check(accuracy: Any, plan: AttackPlan, base: float, tolerance: float) -> Check:
    steps = getattr(plan.attack, "steps", None)
    if steps is None:
        return Check("more steps", True, "not applicable: the attack has no steps")
    more = dataclasses.replace(plan.attack, **{"steps": 2 * steps})
    value = accuracy(dataclasses.replace(plan, attack=more))
    weaker, unconverged = value > base + tolerance, value < base - tolerance
    advice = ""
    if weaker:
        advice = "more steps made the attack weaker: its loss does not guide it"
    elif unconverged:
        advice = "twice the steps found more examples: run the attack longer"
    return Check(
        name="more steps",
        passed=not (weaker or unconverged),
        measured=f"{value:.1%} with {2 * steps} steps vs {base:.1%} with {steps}",
        advice=advice,
    )


def _not_better(
    name: str, what: str, value: float, base: float, tolerance: float, advice: str
) -> Check:
    passed = value >= base - tolerance
    return Check(
        name=name,
        passed=passed,
        measured=f"{value:.1%} accuracy under {what} vs {base:.1%} white-box",
        advice="" if passed else advice,
    )


def _scaled_budget(attack: Attack, eps: float) -> Attack:
    """The attack at radius ``eps``, its step size scaled alike (when it has one)."""
    old = _eps(attack)
    changes: dict[str, Any] = {"eps": eps}
    alpha = getattr(attack, "alpha", None)
    if alpha is not None:
        changes["alpha"] = alpha * eps / old
    return dataclasses.replace(attack, **changes)


def _input_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: AttackPlan, seed: int
) -> torch.Tensor:
    """∇ₓ of the loss the plan's attack ascends (its ``loss`` if it names one of the shared
    losses, else cross-entropy), through its gradient view."""
    view = gradient_view(model, plan.gradients)
    name = str(getattr(plan.attack, "loss", "ce"))
    loss_fn = LOSSES.get(name if name in LOSSES else "ce")
    grads = []
    with eval_mode(view), torch.enable_grad(), seeded(seed):
        for start in range(0, len(x), 250):
            chunk = x[start : start + 250].clone().requires_grad_(True)
            logits = view(chunk).float()
            loss = loss_fn(logits, y[start : start + 250], None).sum()
            (grad,) = torch.autograd.grad(loss, chunk)
            grads.append(grad.detach())
    return torch.cat(grads)
