"""UPSET: a generative, universal, targeted attack (one learned perturbation per class).

Paper: Sarkar, Bansal, Mahbub & Chellappa, "UPSET and ANGRI: Breaking High Performance Image
Classifiers", 2017. A residual generating network R maps a target class t (one-hot) to an
image-shaped perturbation, and x' = clip(x + s·R(t)) for *every* image x: the perturbation is
universal per class, which is what makes UPSET cheap at test time (one forward of R per class)
and, for the same budget, weaker than a per-image attack such as targeted PGD.

Here R is a small MLP ending in tanh, scaled by s = ``eps``, so δ_t = eps·tanh(·) lies in the
L∞ ball of radius ``eps`` by construction and compares with PGD at the same ε. R is trained
on the batch it is called with (``steps`` Adam steps on CE(f(x + δ_t), t) plus the paper's
fidelity term), which needs the batch's targets: the attack is targeted only.

The pre-tanh output is divided by its root mean square (per class) and multiplied by
``TANH_GAIN``. Without it Adam, which moves every weight by about ``lr`` per step, grows the
output layer's pre-activations by about fan-in·lr per step and saturates tanh within a few dozen
steps, where no gradient flows: measured on the 8×8 digits at ε = 0.3 (96 random targets, 200
steps), 93% of outputs beyond |z| = 3 after 40 steps and 12% targeted success, against 59%
with the normalisation, as much as optimising ten free per-class perturbations directly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from robustlab.attacks.base import Attack, AttackContext
from robustlab.attacks.registry import register_attack
from robustlab.attacks.validation import check_count, check_eps, check_range, check_steps

TANH_GAIN = 2.0
"""Root mean square of R's normalised pre-tanh output: tanh(2) ≈ 0.96, so most values can
reach near ±eps while still passing a gradient (gains 1 and 3 measured weaker on digits)."""


@register_attack
@dataclass(frozen=True, kw_only=True)
class UPSET(Attack):
    """UPSET (Sarkar et al. 2017): a learned universal perturbation per target class.

    Threat model: L∞ ball of radius ``eps`` intersected with [0, 1]; targeted only (pass
    ``target=``). Arguments: ``steps`` Adam steps at learning rate ``lr`` training R, an MLP
    with two hidden layers of ``hidden`` units from the one-hot target to tanh(·)·eps;
    ``fidelity`` weighs the paper's fidelity term, here mean((δ/eps)²): the squared L2 size
    of δ as a share of the budget's, so one weight means the same for any ε and input size.
    With ``early_stop`` training ends once every example is classified as its target.

    Example: ``x_adv = UPSET(eps=0.3, steps=100)(model, x, y, target=t)``: every image with
    target t receives the same δ_t (up to clipping into [0, 1]).
    """

    eps: float = 0.3
    steps: int = 100
    lr: float = 0.01
    hidden: int = 128
    fidelity: float = 0.01

    name: ClassVar[str] = "upset"
    targeted_only: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_eps(self, self.eps, "linf")
        check_steps(self, "steps", self.steps)
        check_range(self, "lr", self.lr, minimum=0.0, inclusive=False)
        check_count(self, "hidden", self.hidden)
        check_range(self, "fidelity", self.fidelity, minimum=0.0)

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        assert target is not None  # ``run`` refuses a call without one (targeted_only)
        if len(x) == 0:
            return x.clone()
        with torch.no_grad():
            classes = context.logits(x[:1]).shape[1]
        if int(target.max()) >= classes or int(target.min()) < 0:
            raise ValueError(f"{type(self).__name__}: target classes must be in [0, {classes})")
        network = self._train(context, x, target, classes)
        with torch.no_grad():
            return (x + network.perturbation(target)).clamp(0.0, 1.0)

    def _train(
        self, context: AttackContext, x: torch.Tensor, target: torch.Tensor, classes: int
    ) -> _Generator:
        """``steps`` Adam steps on R's own parameters: ``torch.autograd.grad`` with respect to
        them only, so no model parameter's ``.grad`` is ever written."""
        network = _Generator.initialise(
            classes, self.hidden, x.shape[1:], self.eps, context.generator, x.device
        )
        adam = _Adam(network.parameters, self.lr)
        for _ in range(self.steps):
            delta = network.perturbation(target)
            x_adv = (x + delta).clamp(0.0, 1.0)
            logits = context.logits(x_adv)
            if self.early_stop:
                with torch.no_grad():
                    if bool(context.success(logits, x_adv, target, target).all()):
                        break
            loss = F.cross_entropy(logits, target)
            if self.fidelity > 0:
                loss = loss + self.fidelity * (delta / self.eps).pow(2).mean()
            adam.step(torch.autograd.grad(loss, network.parameters))
        return network


class _Adam:
    """Adam (Kingma & Ba 2015, torch's defaults) on R's leaf tensors, written out: the first
    ``torch.optim`` step of a process imports ``torch._dynamo`` (6-8 s measured on a busy
    2-core machine), longer than the whole attack on a small model."""

    BETAS = (0.9, 0.999)
    EPSILON = 1e-8

    def __init__(self, parameters: list[torch.Tensor], lr: float) -> None:
        self.parameters, self.lr, self.count = parameters, lr, 0
        self.first = [torch.zeros_like(p) for p in parameters]
        self.second = [torch.zeros_like(p) for p in parameters]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        self.count += 1
        beta1, beta2 = self.BETAS
        corrected1, corrected2 = 1 - beta1**self.count, 1 - beta2**self.count
        for parameter, grad, first, second in zip(
            self.parameters, grads, self.first, self.second, strict=True
        ):
            first.mul_(beta1).add_(grad, alpha=1 - beta1)
            second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denominator = (second / corrected2).sqrt_().add_(self.EPSILON)
            parameter.addcdiv_(first, denominator, value=-self.lr / corrected1)


@dataclass(frozen=True)
class _Generator:
    """R: one-hot class -> hidden -> hidden -> image-shaped eps·tanh (of the RMS-normalised
    pre-activation), as plain leaf tensors,
    initialised from the attack's generator (torch.nn's init would draw from the global RNG)."""

    parameters: list[torch.Tensor]
    shape: tuple[int, ...]
    eps: float

    @classmethod
    def initialise(
        cls,
        classes: int,
        hidden: int,
        shape: torch.Size,
        eps: float,
        generator: torch.Generator,
        device: torch.device,
    ) -> _Generator:
        sizes = [classes, hidden, hidden, math.prod(shape)]
        parameters = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1 / math.sqrt(fan_in)  # torch.nn.Linear's default range
            for size in ((fan_out, fan_in), (fan_out,)):
                uniform = torch.rand(size, generator=generator, device=device)
                parameters.append(((2 * uniform - 1) * bound).requires_grad_(True))
        return cls(parameters=parameters, shape=tuple(shape), eps=eps)

    def perturbation(self, target: torch.Tensor) -> torch.Tensor:
        """δ_t for each entry of ``target``: the same image for every equal class."""
        classes = self.parameters[0].shape[1]
        hidden = F.one_hot(target, classes).float()
        layers = len(self.parameters) // 2
        for index in range(layers):
            weight, bias = self.parameters[2 * index], self.parameters[2 * index + 1]
            hidden = F.linear(hidden, weight, bias)
            if index < layers - 1:
                hidden = F.relu(hidden)
        scale = hidden.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
        hidden = TANH_GAIN * hidden / scale
        return (self.eps * torch.tanh(hidden)).view(len(target), *self.shape)
