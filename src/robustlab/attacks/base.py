"""The attack contract, enforced once for every attack.

An attack is a frozen, keyword-only value holding its hyper-parameters; calling it with a
model and a batch returns the adversarial batch. ``Attack.__call__`` is final in spirit:
subclasses implement ``_perturb`` only, and the base class

* checks inputs (pixels in [0, 1], labels and targets the right shape),
* runs the model in eval mode and restores every submodule's mode afterwards,
* never touches parameters: gradients are taken with ``torch.autograd.grad`` with respect to
  the input only, so ``p.grad`` and ``requires_grad`` flags stay exactly as they were (the same
  attack object runs inside adversarial training, with a training gradient pending),
* seeds a private generator, so an attack is reproducible and does not disturb global RNGs,
* clips the result into the threat model's ball and the [0, 1] box, whatever ``_perturb`` did.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from robustlab.attacks.norms import get_norm
from robustlab.batching import chunked_forward
from robustlab.modes import eval_mode
from robustlab.precision import Precision, autocast


@dataclass(frozen=True)
class AttackContext:
    """What ``_perturb`` gets besides the batch: the model and how to call it."""

    model: nn.Module
    generator: torch.Generator
    precision: Precision

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Model output as float32 logits, under bf16 autocast when asked."""
        with autocast(x.device, self.precision):
            output = chunked_forward(self.model, x)
        return output.float()

    def confirmed_fooled(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Success judged in full precision: under bf16 a borderline example can look fooled
        when it is not, and an attack must not stop early on such an example."""
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            return fooled(chunked_forward(self.model, x).float(), y, target)

    def success(
        self,
        logits: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        """Per-example success of inputs ``x`` whose ``logits`` came from ``self.logits``:
        under bf16 every claimed success is re-checked in fp32 (cheap: only the hits are
        re-run), so attacks that stop on success never stop on a false one."""
        won = fooled(logits, y, target)
        if self.precision != "fp32" and bool(won.any()):
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
        _check_batch(x, y, target)
        if target is None and self.targeted_only:
            raise ValueError(f"{type(self).__name__} is a targeted attack: pass target=")
        if target is not None and self.untargeted_only:
            raise ValueError(f"{type(self).__name__} has no targeted variant")
        x = x.detach()
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        with eval_mode(model), torch.enable_grad():
            context = AttackContext(model=model, generator=generator, precision=self.precision)
            x_adv = self._perturb(context, x, y.detach(), target)
        return self.within_budget(x, x_adv.detach())

    @abstractmethod
    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        """Return adversarial inputs for ``x``; the caller enforces box and budget."""

    @property
    def budget(self) -> float | None:
        """The norm bound ε, or None for minimal-perturbation attacks."""
        eps = getattr(self, "eps", None)
        return None if eps is None else float(eps)

    def within_budget(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        delta = x_adv - x
        eps = self.budget
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
