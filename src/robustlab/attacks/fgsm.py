"""Single-step attacks: FGSM (L∞) and the fast gradient method for L2 / L1.

Paper: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", 2015.
One gradient of the loss at the clean input, one step of size ``eps`` in the norm's
steepest-ascent direction (the sign for L∞, the normalised gradient for L2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from robustlab.attacks.base import Attack, AttackContext
from robustlab.attacks.losses import LOSSES
from robustlab.attacks.norms import get_norm
from robustlab.attacks.registry import register_attack
from robustlab.attacks.validation import check_eps


@register_attack
@dataclass(frozen=True, kw_only=True)
class FGSM(Attack):
    """Fast gradient sign method: one step x + eps · steepest(∇x loss), clipped to [0, 1].

    ``norm="linf"`` is FGSM proper; ``"l2"``/``"l1"`` give the fast gradient method.
    Example: ``x_adv = FGSM(eps=0.3)(model, x, y)``
    """

    eps: float = 0.3
    norm: Literal["linf", "l2", "l1"] = "linf"
    loss: Literal["ce", "cw", "dlr"] = "ce"

    name: ClassVar[str] = "fgsm"

    def __post_init__(self) -> None:
        get_norm(self.norm)
        check_eps(self, self.eps, self.norm)
        LOSSES.get(self.loss)

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
        x_grad = x.clone().requires_grad_(True)
        logits = context.logits(x_grad)
        grad = context.input_gradient(LOSSES.get(self.loss)(logits, y, target), x_grad)
        step = self.eps * get_norm(self.norm).steepest(grad)
        return (x + step).clamp(0.0, 1.0)
