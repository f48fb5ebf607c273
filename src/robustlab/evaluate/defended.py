"""Robust accuracy of a defended model under one attack plan, counting a detected example as
the defense winning.

An ``AttackPlan`` is an attack plus the way it takes gradients (``Gradients``: plain, BPDA,
EOT, joint with detectors). Every example is scored on the *deployed* defense: an example is
robust when its clean input is classified correctly and its adversarial input is either
classified correctly or rejected by a detector. A plan with ``joint`` gradients attacks the
view with a "rejected" output, targeted toward each of the ``targets`` runner-up classes of
the clean prediction in turn; an example is broken as soon as one target breaks it.

Randomised defenses answer the scoring call with one draw of their randomness, seeded, so an
evaluation is reproducible and a lucky draw is no more likely than in deployment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustlab.attacks.base import Attack
from robustlab.batching import chunked_forward
from robustlab.defenses import DefendedModel, Gradients, gradient_view
from robustlab.errors import ConfigError
from robustlab.modes import eval_mode


@dataclass(frozen=True)
class AttackPlan:
    """An attack, how it differentiates the defense, and (joint) how many targets it tries."""

    attack: Attack
    gradients: Gradients = field(default_factory=Gradients)
    targets: int = 3

    def __post_init__(self) -> None:
        if self.gradients.joint and self.attack.untargeted_only:
            raise ConfigError(
                f"gradients.joint attacks toward runner-up classes, but attack "
                f"{self.attack.name!r} has no targeted variant: choose e.g. pgd or apgd"
            )
        if self.targets < 1:
            raise ConfigError(f"targets must be >= 1, got {self.targets}")

    def describe(self) -> dict[str, Any]:
        return {
            **self.attack.describe(),
            "gradients": self.gradients.describe(),
            **({"targets": self.targets} if self.gradients.joint else {}),
        }


@dataclass(frozen=True)
class Scored:
    """Per example of one evaluation, on the deployed defense."""

    clean_correct: torch.Tensor
    clean_rejected: torch.Tensor
    robust: torch.Tensor
    """Clean-correct and, after the attack, still correct or rejected."""
    adversarial_rejected: torch.Tensor
    seconds: float

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean())

    def summary(self) -> dict[str, Any]:
        attacked = int(self.clean_correct.sum())
        broken = attacked - int(self.robust.sum())
        return {
            "robust_acc": round(self.robust_accuracy, 6),
            "success_rate": round(broken / attacked, 6) if attacked else 0.0,
            "rejected_share": round(float(self.adversarial_rejected.float().mean()), 6),
            "images": len(self.robust),
            "seconds": round(self.seconds, 3),
        }


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Global RNG fixed for a randomised defense's draws, and restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def deployed_answers(
    model: nn.Module, x: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, rejected) per input, as the deployed defense answers."""
    with torch.no_grad(), eval_mode(model), seeded(seed):
        predicted = chunked_forward(model, x).argmax(dim=1)
        if isinstance(model, DefendedModel) and model.has_detectors:
            rejected = torch.cat([model.rejects(chunk) for chunk in torch.split(x, 500)])
        else:
            rejected = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    return predicted, rejected


def evaluate_plan(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: AttackPlan,
    *,
    batch_size: int = 500,
    seed: int = 0,
    attacked_model: nn.Module | None = None,
) -> Scored:
    """Attack the clean-correct examples of ``x`` under ``plan`` and score on ``model``.

    ``attacked_model``: a different model to attack (a surrogate, for transfer), scored on
    ``model`` all the same.
    """
    plan.attack.check_budget(x.shape[1:])
    predicted, clean_rejected = deployed_answers(model, x, seed)
    clean_correct = predicted == y
    robust = clean_correct.clone()
    rejected_after = torch.zeros_like(robust)
    target_model = model if attacked_model is None else attacked_model
    view = gradient_view(target_model, plan.gradients)
    started = time.perf_counter()
    for start in range(0, len(x), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(x)), device=x.device)
        rows = rows[clean_correct[rows]]
        if len(rows) == 0:
            continue
        with seeded(seed + start):
            held, rejected = _attack_rows(model, view, x, y, rows, plan, seed + start)
        robust[rows] = held
        rejected_after[rows] = rejected
    return Scored(
        clean_correct=clean_correct,
        clean_rejected=clean_rejected,
        robust=robust,
        adversarial_rejected=rejected_after,
        seconds=time.perf_counter() - started,
    )


def _attack_rows(
    model: nn.Module,
    view: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    plan: AttackPlan,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(defense held, adversarial rejected) for ``rows``: the defense holds when every
    target's adversarial input is still classified correctly or rejected."""
    held = torch.ones(len(rows), dtype=torch.bool, device=x.device)
    rejected = torch.zeros_like(held)
    for target in _targets(model, x[rows], y[rows], plan, seed):
        todo = held.nonzero().squeeze(1)
        if len(todo) == 0:
            break
        chosen = None if target is None else target[todo]
        x_adv = plan.attack.run(view, x[rows[todo]], y[rows[todo]], target=chosen).x_adv
        predicted, refused = deployed_answers(model, x_adv, seed)
        holds = (predicted == y[rows[todo]]) | refused
        held[todo] = holds
        rejected[todo] = refused
    return held, rejected


def _targets(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: AttackPlan, seed: int
) -> list[torch.Tensor | None]:
    """One untargeted run, or (joint) the runner-up classes of the clean prediction."""
    if not plan.gradients.joint:
        return [None]
    with torch.no_grad(), eval_mode(model), seeded(seed):
        logits = chunked_forward(model, x).float()
    logits[torch.arange(len(y)), y] = float("-inf")
    count = min(plan.targets, logits.shape[1] - 1)
    ranked = logits.argsort(dim=1, descending=True)[:, :count]
    return [ranked[:, k] for k in range(count)]
