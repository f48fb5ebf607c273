"""Training objectives: what loss a phase minimises on each batch.

An objective is built from its config; the trainer calls ``objective(model, x, y, step)``
and gets the loss to back-propagate plus the logits behind the running training accuracy
(for adversarial objectives: accuracy on the training attack's examples). Adversarial
objectives take their attack from the registry and only *call* it: attacks never touch
parameter gradients or the model's mode, so they run safely inside a training step.

Two hooks serve free adversarial training, which reuses one backward pass for the weights
and the perturbation: ``replays`` (how often the trainer steps on each minibatch) and
``after_backward`` (called after every backward pass). ``state_dict``/``load_state_dict``
carry an objective's own trained state (the generator of ``generative``) through checkpoints.
The defences of ``regularisers``, ``distillation`` and ``generative`` register themselves
from their modules, imported at the bottom of this one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.base import Attack
from robustlab.attacks.norms import get_norm
from robustlab.config.objectives import (
    AdversarialObjectiveConfig,
    FGSMRSObjectiveConfig,
    FreeObjectiveConfig,
    ObjectiveConfig,
    StandardObjectiveConfig,
    TradesObjectiveConfig,
)
from robustlab.errors import CheckpointError
from robustlab.registry import Registry


@dataclass(frozen=True)
class ObjectiveOutput:
    loss: torch.Tensor
    logits: torch.Tensor
    """Logits for the batch's examples, in order (on whichever inputs the objective scores)."""


@dataclass(frozen=True)
class TrainingStep:
    """Where training stands when an objective is called.

    ``epoch``: epochs completed in the phase, fractional (drives ε warm-up); ``index``: a
    number unique to this batch in the run, the same on resume (seeds the attack, so every
    batch gets fresh random starts and a resumed run draws the same ones).
    """

    epoch: float
    index: int


class Objective:
    """Base of every objective; subclasses implement ``__call__``."""

    replays: int = 1
    """Optimiser steps the trainer takes on each minibatch (free adversarial training)."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: TrainingStep | None = None
    ) -> ObjectiveOutput:
        raise NotImplementedError

    def after_backward(self) -> None:
        """Called after each backward pass, before the optimiser step."""

    def start_epoch(self) -> None:
        """Called before each epoch."""

    def training_attack(self) -> Attack | None:
        """The attack this objective trains against at full strength (None: standard)."""
        return None

    def state_dict(self) -> dict[str, Any] | None:
        """State the objective learns across epochs, saved with every checkpoint so a resumed
        run continues it exactly (None: it keeps none). Tensors and builtin containers only."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, when a run resumes mid-phase."""
        raise CheckpointError(
            f"the checkpoint holds state for a {type(self).__name__}, which keeps none; "
            "it belongs to another config"
        )


OBJECTIVES: Registry[Callable[[Any], Objective]] = Registry("objective")


@dataclass(frozen=True)
class StandardObjective(Objective):
    """CE on clean inputs; at ``temperature`` T on logits / T (a distillation teacher)."""

    label_smoothing: float = 0.0
    temperature: float = 1.0

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: TrainingStep | None = None
    ) -> ObjectiveOutput:
        logits = model(x)
        scaled = logits.float() if self.temperature == 1.0 else logits.float() / self.temperature
        loss = F.cross_entropy(scaled, y, label_smoothing=self.label_smoothing)
        return ObjectiveOutput(loss=loss, logits=logits)


def warmup_factor(step: TrainingStep | None, warmup_epochs: float) -> float:
    """Share of the full ε in force at ``step``: linear from 0 over the warm-up epochs."""
    if step is None or warmup_epochs <= 0:
        return 1.0
    return min(1.0, step.epoch / warmup_epochs)


def scheduled_attack(attack: Attack, factor: float, step: TrainingStep | None) -> Attack | None:
    """``attack`` with ε (and its step size) scaled by ``factor`` and a per-batch seed; None
    when the scaled ε is 0 (train on clean inputs)."""
    changes: dict[str, Any] = {}
    if step is not None:
        changes["seed"] = attack.seed + step.index
    if factor < 1.0:
        eps = attack.budget
        if eps is None or eps * factor == 0:
            return None
        changes["eps"] = eps * factor
        if getattr(attack, "alpha", None) is not None:
            changes["alpha"] = attack.alpha * factor  # type: ignore[attr-defined]
    return dataclasses.replace(attack, **changes) if changes else attack


@dataclass(frozen=True)
class AdversarialObjective(Objective):
    """Cross-entropy on the attack's examples, optionally mixed with the clean loss.

    Madry et al. 2018 (PGD), Goodfellow et al. 2015 (``clean_weight``), and with a one-step
    random-start attack Wong et al. 2020 (FGSM-RS).
    """

    attack: Attack
    clean_weight: float = 0.0
    eps_warmup_epochs: float = 0.0

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: TrainingStep | None = None
    ) -> ObjectiveOutput:
        attack = scheduled_attack(self.attack, warmup_factor(step, self.eps_warmup_epochs), step)
        x_adv = x if attack is None else attack(model, x, y)
        if self.clean_weight == 0:
            logits = model(x_adv)
            return ObjectiveOutput(loss=F.cross_entropy(logits.float(), y), logits=logits)
        both = model(torch.cat([x, x_adv])).float()
        clean, adversarial = both[: len(x)], both[len(x) :]
        loss = self.clean_weight * F.cross_entropy(clean, y) + (
            1 - self.clean_weight
        ) * F.cross_entropy(adversarial, y)
        return ObjectiveOutput(loss=loss, logits=adversarial)

    def training_attack(self) -> Attack:
        return self.attack


@dataclass(frozen=True)
class TradesObjective(Objective):
    """TRADES (Zhang et al. 2019): CE on clean inputs + β·KL(f(x) ‖ f(x_adv)).

    The KL term is summed over classes and averaged over the batch, as in the authors' code.
    """

    attack: Attack
    beta: float = 6.0
    eps_warmup_epochs: float = 0.0

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: TrainingStep | None = None
    ) -> ObjectiveOutput:
        attack = scheduled_attack(self.attack, warmup_factor(step, self.eps_warmup_epochs), step)
        x_adv = x if attack is None else attack(model, x, y)
        both = model(torch.cat([x, x_adv])).float()
        clean, adversarial = both[: len(x)], both[len(x) :]
        robust = F.kl_div(
            F.log_softmax(adversarial, dim=1), F.softmax(clean, dim=1), reduction="batchmean"
        )
        loss = F.cross_entropy(clean, y) + self.beta * robust
        return ObjectiveOutput(loss=loss, logits=adversarial)

    def training_attack(self) -> Attack:
        return self.attack


class FreeObjective(Objective):
    """Free adversarial training (Shafahi et al. 2019).

    Each minibatch is replayed ``replays`` times. The trainer's backward pass through
    x + δ gives the parameter gradient *and* ∇x, from which ``after_backward`` takes one
    signed-gradient step on δ (projected onto the ε-ball and the [0, 1] box). δ carries over
    to the next minibatch, as in the paper, and restarts at zero each epoch.
    """

    def __init__(self, config: FreeObjectiveConfig) -> None:
        self.config = config
        self.replays = config.replays
        self.norm = get_norm(config.norm)
        self.step_size = config.eps if config.step is None else config.step
        self._delta: torch.Tensor | None = None
        self._x: torch.Tensor | None = None
        self._x_adv: torch.Tensor | None = None
        self._eps = config.eps

    def start_epoch(self) -> None:
        self._delta = None

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: TrainingStep | None = None
    ) -> ObjectiveOutput:
        self._eps = self.config.eps * warmup_factor(step, self.config.eps_warmup_epochs)
        delta = self._delta
        if delta is None or delta.shape[1:] != x.shape[1:] or len(delta) < len(x):
            delta = torch.zeros_like(x)
        delta = delta[: len(x)]
        x_adv = (x + delta).clamp(0.0, 1.0).detach().requires_grad_(True)
        self._x, self._x_adv, self._delta = x, x_adv, delta
        logits = model(x_adv)
        return ObjectiveOutput(loss=F.cross_entropy(logits.float(), y), logits=logits)

    def after_backward(self) -> None:
        x, x_adv, delta = self._x, self._x_adv, self._delta
        if x is None or x_adv is None or delta is None or x_adv.grad is None:
            return
        with torch.no_grad():
            stepped = delta + self.step_size * self.norm.steepest(x_adv.grad.float())
            projected = self.norm.project(stepped, self._eps)
            self._delta = ((x + projected).clamp(0.0, 1.0) - x).detach()
        self._x_adv = None

    def training_attack(self) -> Attack:
        return self.config.attack.build()


def _build_standard(config: StandardObjectiveConfig) -> Objective:
    return StandardObjective(label_smoothing=config.label_smoothing, temperature=config.temperature)


def _build_adversarial(config: AdversarialObjectiveConfig | FGSMRSObjectiveConfig) -> Objective:
    return AdversarialObjective(
        attack=config.attack.build(),
        clean_weight=config.clean_weight,
        eps_warmup_epochs=config.eps_warmup_epochs,
    )


def _build_trades(config: TradesObjectiveConfig) -> Objective:
    return TradesObjective(
        attack=config.attack.build(), beta=config.beta, eps_warmup_epochs=config.eps_warmup_epochs
    )


OBJECTIVES.add("standard", _build_standard, description="cross-entropy on clean inputs")
OBJECTIVES.add(
    "adversarial",
    _build_adversarial,
    description="adversarial training on any attack (Madry et al. PGD-AT), clean mix optional",
)
OBJECTIVES.add(
    "fgsm_rs",
    _build_adversarial,
    description="fast adversarial training: FGSM from a random start (Wong et al. 2020)",
)
OBJECTIVES.add(
    "free",
    FreeObjective,
    description="free adversarial training: minibatch replay (Shafahi et al. 2019)",
)
OBJECTIVES.add(
    "trades",
    _build_trades,
    description="TRADES: clean CE + β·KL to the adversarial prediction (Zhang et al. 2019)",
)


def build_objective(config: ObjectiveConfig) -> Objective:
    return OBJECTIVES.get(config.type)(config)


# The defences of the thesis's survey register themselves; imported last, as they build on
# the names above.
from robustlab.train import distillation, generative, regularisers  # noqa: E402, F401
