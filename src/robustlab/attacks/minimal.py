"""Minimal-perturbation attacks (CW-L2, DeepFool, L-BFGS): they search for the smallest
perturbation that fools the model instead of spending a fixed budget, so "within budget"
means something different for them than for PGD-style attacks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robustlab.attacks.base import Attack
from robustlab.attacks.norms import get_norm, per_example
from robustlab.attacks.validation import check_eps


def l2_distance(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return get_norm("l2").size(x_adv - x)


@dataclass(frozen=True, kw_only=True)
class MinimalPerturbation(Attack):
    """Base of attacks that find the smallest perturbation instead of spending a budget.

    ``THREAT`` names the norm they minimise. Without ``eps`` there is no budget and
    ``threat`` is "none"; with ``eps``, a result farther than eps from x is *replaced by the
    clean input* (counted as a failure), rather than being shrunk onto the ball, so every
    returned perturbation is one the attack actually found.
    """

    eps: float | None = None

    THREAT: ClassVar[str] = "l2"

    def __post_init__(self) -> None:
        if self.eps is not None:
            check_eps(self, self.eps, self.THREAT)

    @property
    def threat(self) -> str:
        return self.THREAT if self.eps is not None else "none"

    def keep_within_eps(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        if self.eps is None:
            return x_adv
        too_far = get_norm(self.THREAT).size(x_adv - x) > self.eps
        return torch.where(per_example(too_far, x), x, x_adv)
