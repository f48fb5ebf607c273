"""DeepFool: repeated steps to the nearest decision boundary of the linearised model.

Paper: Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool
deep neural networks", CVPR 2016. Cheap (a few steps of ``candidates`` gradients each) and
close to minimal, which is why it estimates robustness rather than certifying it: CW-L2
usually finds somewhat smaller perturbations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robustlab.attacks.base import AttackContext, fooled
from robustlab.attacks.minimal import MinimalPerturbation
from robustlab.attacks.norms import TINY, per_example
from robustlab.attacks.registry import register_attack
from robustlab.attacks.validation import check_count, check_range, check_steps

STEP_MARGIN = 1e-4
"""Added to each step's distance (as in the authors' code) so a step crosses the boundary."""


@register_attack
@dataclass(frozen=True, kw_only=True)
class DeepFool(MinimalPerturbation):
    """DeepFool (multi-class, L2): step to the closest linearised boundary until fooled.

    Paper: Moosavi-Dezfooli et al., "DeepFool: a simple and accurate method to fool deep
    neural networks", 2016. Threat model: minimal L2 perturbation, clipped to [0, 1]; no
    budget unless ``eps`` is set (then results larger than eps are replaced by the clean
    input). Arguments: ``steps`` at most; ``overshoot`` scales the accumulated perturbation
    by 1 + overshoot so it lands past the boundary; ``candidates`` top classes of the clean
    input (the true class and the most likely others) are the boundaries considered. Batched:
    each step takes one gradient per candidate class for the whole batch, and an example stops
    as soon as it is fooled (so ``early_stop`` changes nothing). An example still not fooled
    after ``steps`` returns its last iterate. Untargeted only.

    Example: ``x_adv = DeepFool(steps=50, overshoot=0.02)(model, x, y)``
    """

    steps: int = 50
    overshoot: float = 0.02
    candidates: int = 10

    name: ClassVar[str] = "deepfool"
    untargeted_only: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self, "steps", self.steps)
        check_range(self, "overshoot", self.overshoot, minimum=0.0)
        check_count(self, "candidates", self.candidates, minimum=2)

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        with torch.no_grad():
            clean_logits = context.logits(x)
        count = min(self.candidates, clean_logits.shape[1])
        # Column 0 is the true class; the others are the most likely wrong classes.
        classes = clean_logits.scatter(1, y[:, None], torch.inf).topk(count, dim=1).indices
        total = torch.zeros_like(x)
        x_adv = x.clone()
        active = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            x_active = x_adv[active].requires_grad_(True)
            logits = context.logits(x_active)
            keep = ~fooled(logits, y[active], None)
            if not keep.any():
                break
            step = self._step(x_active, logits, classes[active], keep)
            active = active[keep]
            with torch.no_grad():
                total[active] += step
                x_adv[active] = (x[active] + (1 + self.overshoot) * total[active]).clamp(0, 1)
        return self.keep_within_eps(x, x_adv)

    def _step(
        self,
        x_active: torch.Tensor,
        logits: torch.Tensor,
        classes: torch.Tensor,
        keep: torch.Tensor,
    ) -> torch.Tensor:
        """Smallest step onto the nearest linearised boundary, for the ``keep`` examples."""
        chosen = logits.gather(1, classes)
        grads = []
        for column in range(classes.shape[1]):
            (grad,) = torch.autograd.grad(
                chosen[:, column].sum(), x_active, retain_graph=column < classes.shape[1] - 1
            )
            grads.append(grad[keep])
        with torch.no_grad():
            values = chosen[keep]
            true_grad = grads[0]
            gaps = (values[:, 1:] - values[:, :1]).abs()  # (n, k-1)
            normals = torch.stack([g - true_grad for g in grads[1:]], dim=1)  # (n, k-1, ...)
            normal_sizes = normals.flatten(2).norm(dim=2).clamp_min(TINY)
            nearest = (gaps / normal_sizes).argmin(dim=1)
            rows = torch.arange(len(nearest), device=nearest.device)
            normal = normals[rows, nearest]
            size = normal_sizes[rows, nearest]
            scale = (gaps[rows, nearest] + STEP_MARGIN) / size.pow(2)
            return per_example(scale, normal) * normal
