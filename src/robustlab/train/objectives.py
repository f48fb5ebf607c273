"""Training objectives: what loss a phase minimises on each batch.

An objective is a value built from its config; the trainer calls ``objective(model, x, y)``
and gets the loss to back-propagate plus the logits used for the running accuracy. Adversarial
objectives (PGD-AT, FGSM-RS, free, TRADES) register here beside ``standard`` and receive their
attack the same way, so the trainer never changes when one is added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.config import ObjectiveConfig, StandardObjectiveConfig
from robustlab.registry import Registry


@dataclass(frozen=True)
class ObjectiveOutput:
    loss: torch.Tensor
    logits: torch.Tensor
    """Logits for the batch's examples, in order (on whichever inputs the objective scores)."""


class Objective(Protocol):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> ObjectiveOutput: ...


OBJECTIVES: Registry[Callable[[Any], Objective]] = Registry("objective")


@dataclass(frozen=True)
class StandardObjective:
    label_smoothing: float = 0.0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> ObjectiveOutput:
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return ObjectiveOutput(loss=loss, logits=logits)


def _build_standard(config: StandardObjectiveConfig) -> Objective:
    return StandardObjective(label_smoothing=config.label_smoothing)


OBJECTIVES.add("standard", _build_standard, description="cross-entropy on clean inputs")


def build_objective(config: ObjectiveConfig) -> Objective:
    return OBJECTIVES.get(config.type)(config)
