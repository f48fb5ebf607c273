"""Generative adversarial trainer (Lee, Han & Lee 2017): a generator network is the attack.

A generator G maps the classifier's input gradient ∇ₓ CE(f(x), y) to a perturbation
δ = ε·tanh(G(∇)), inside the L∞ ball by construction. Every training step (a) updates G with
its own Adam to raise CE(f(x + δ), y) (minus the paper's optional c·‖δ‖² penalty), then
(b) scores the classifier on w·CE(x) + (1 − w)·CE(x + δ) with δ from the updated G, fixed.

G's weights and Adam moments evolve with the classifier, so they are training state: the
trainer saves them with every checkpoint (``state_dict``) and restores them on resume
(``load_state_dict``), and a resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.base import Attack
from robustlab.config.objectives import GenerativeObjectiveConfig
from robustlab.errors import CheckpointError
from robustlab.modes import eval_mode
from robustlab.train.objectives import OBJECTIVES, Objective, ObjectiveOutput, TrainingStep
from robustlab.train.regularisers import input_gradients


class PerturbationGenerator(nn.Module):
    """G: an input gradient to a perturbation in (−ε, ε) of the same shape.

    A one-hidden-layer perceptron on the flattened gradient. Each example's gradient is first
    divided by its largest absolute value: gradients shrink by orders of magnitude as the
    classifier learns, and only their direction says where the classifier is weak.
    """

    def __init__(self, input_shape: tuple[int, ...], width: int) -> None:
        super().__init__()
        self.input_shape = input_shape
        features = math.prod(input_shape)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(features, width), nn.ReLU(), nn.Linear(width, features)
        )

    def forward(self, gradient: torch.Tensor, eps: float) -> torch.Tensor:
        scale = gradient.flatten(1).abs().amax(dim=1).clamp_min(1e-12)
        scaled = gradient / scale.view(-1, *([1] * (gradient.dim() - 1)))
        return eps * torch.tanh(self.net(scaled).view(-1, *self.input_shape))


class GenerativeObjective(Objective):
    """The generative adversarial trainer; G is built at the first batch (it takes the input
    shape from it) under a forked random state, so building it draws nothing from the run's
    global random stream."""

    def __init__(self, config: GenerativeObjectiveConfig) -> None:
        self.config = config
        self.generator: PerturbationGenerator | None = None
        self.optimizer: torch.optim.Adam | None = None
        self._pending: dict[str, Any] | None = None

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: TrainingStep | None = None
    ) -> ObjectiveOutput:
        generator, optimizer = self._ready(x)
        with eval_mode(model):  # the gradient G sees and G's step: no dropout, no BN updates
            _, _, gradient = input_gradients(model, x, y)
            delta = generator(gradient, self.config.eps)
            x_adv = (x + delta).clamp(0.0, 1.0)
            loss = -F.cross_entropy(model(x_adv).float(), y)
            if self.config.perturbation_weight > 0:
                penalty = delta.float().pow(2).flatten(1).sum(1).mean()
                loss = loss + self.config.perturbation_weight * penalty
            parameters = list(generator.parameters())
            grads = torch.autograd.grad(loss, parameters)  # G's parameters only
        for parameter, grad in zip(parameters, grads, strict=True):
            parameter.grad = grad
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            x_adv = (x + generator(gradient, self.config.eps)).clamp(0.0, 1.0)
        weight = self.config.clean_weight
        both = model(torch.cat([x, x_adv])).float()
        clean, adversarial = both[: len(x)], both[len(x) :]
        loss = weight * F.cross_entropy(clean, y) + (1 - weight) * F.cross_entropy(adversarial, y)
        return ObjectiveOutput(loss=loss, logits=adversarial)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial batch for ``x``, without updating anything."""
        generator, _ = self._ready(x)
        with eval_mode(model):
            _, _, gradient = input_gradients(model, x, y)
        with torch.no_grad():
            delta: torch.Tensor = generator(gradient, self.config.eps)
        return (x + delta).clamp(0.0, 1.0)

    def training_attack(self) -> Attack:
        """PGD-40 at ε: what the per-epoch evaluation compares the generator against."""
        return self.config.attack.build()

    def state_dict(self) -> dict[str, Any] | None:
        if self.generator is None or self.optimizer is None:
            return self._pending
        return {
            "input_shape": list(self.generator.input_shape),
            "generator": dict(self.generator.state_dict()),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Kept until the first batch, which says which device G lives on."""
        self.generator, self.optimizer, self._pending = None, None, state

    def _ready(self, x: torch.Tensor) -> tuple[PerturbationGenerator, torch.optim.Adam]:
        if self.generator is not None and self.optimizer is not None:
            return self.generator, self.optimizer
        shape = tuple(x.shape[1:])
        pending = self._pending
        if pending is not None and tuple(pending["input_shape"]) != shape:
            raise CheckpointError(
                f"the checkpoint's generator takes inputs of shape {pending['input_shape']}, "
                f"the data has {list(shape)}: the checkpoint belongs to another dataset"
            )
        with torch.random.fork_rng(devices=[]):
            generator = PerturbationGenerator(shape, self.config.generator_width)
        generator.to(x.device)
        optimizer = torch.optim.Adam(generator.parameters(), lr=self.config.generator_lr)
        if pending is not None:
            generator.load_state_dict(pending["generator"])
            optimizer.load_state_dict(pending["optimizer"])
        self.generator, self.optimizer, self._pending = generator, optimizer, None
        return generator, optimizer


OBJECTIVES.add(
    "generative",
    GenerativeObjective,
    description="generative adversarial trainer: a generator maps ∇ₓ CE to the perturbation "
    "(Lee, Han & Lee 2017)",
)
