"""One attempt of a capacity search: does a freshly initialised model fit this set within
the budget?

Training stops as soon as the set is fitted (checked in eval mode, dropout off, whenever the
running accuracy comes within reach of the threshold), so easy sets cost little; a set is
fitted if that happens at any epoch within the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from robustlab.config import AttackConfig
from robustlab.config.objectives import AdversarialObjectiveConfig, StandardObjectiveConfig
from robustlab.evaluate.accuracy import evaluate_accuracy
from robustlab.evaluate.robust import robust_accuracy
from robustlab.experiments.capacity.settings import CapacitySettings
from robustlab.train.objectives import TrainingStep, build_objective

CHECK_MARGIN = 0.05
"""Check the fit in eval mode once the running accuracy (dropout on, weights moving) is this
close to the threshold: dropout can hold the running figure below a fit that is there."""


@dataclass(frozen=True)
class Attempt:
    images: int
    accuracy: float
    """Fit on the set in eval mode: clean accuracy, or accuracy on the attack's examples."""
    fitted: bool
    epochs: int
    """Epochs spent (the budget, unless it fitted earlier)."""
    seconds: float

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "images": self.images,
            "accuracy": round(self.accuracy, 6),
            "fitted": self.fitted,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 3),
        }


def epoch_budget(settings: CapacitySettings, count: int) -> int:
    """``epochs``, raised for a small set until it holds ``min_steps`` optimiser steps."""
    if settings.min_steps is None:
        return settings.epochs
    batches = math.ceil(count / settings.batch_size)
    return max(settings.epochs, math.ceil(settings.min_steps / batches))


def attempt(
    build: Callable[[], nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: CapacitySettings,
    attack: AttackConfig | None,
    seed: int,
    device: torch.device,
) -> Attempt:
    """Train a model built under ``seed`` on the whole set for at most its epoch budget."""
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build().to(device)
    objective_config = (
        StandardObjectiveConfig() if attack is None else AdversarialObjectiveConfig(attack=attack)
    )
    objective = build_objective(objective_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    order_rng = torch.Generator().manual_seed(seed)
    x_all, y_all = images.to(device), labels.to(device)
    count = len(labels)
    accuracy = 0.0
    budget = epoch_budget(settings, count)
    for epoch in range(1, budget + 1):
        model.train()
        order = torch.randperm(count, generator=order_rng).to(device)
        correct = 0
        for start in range(0, count, settings.batch_size):
            index = order[start : start + settings.batch_size]
            step = TrainingStep(epoch=float(epoch), index=(epoch << 20) + start)
            output = objective(model, x_all[index], y_all[index], step)
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            correct += int((output.logits.detach().argmax(dim=1) == y_all[index]).sum())
        running = correct / count
        if running >= settings.threshold - CHECK_MARGIN or epoch == budget:
            accuracy = _fit(model, x_all, y_all, attack)
            if accuracy >= settings.threshold:
                return Attempt(count, accuracy, True, epoch, time.perf_counter() - started)
    return Attempt(count, accuracy, False, budget, time.perf_counter() - started)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig | None) -> float:
    if attack is None:
        return evaluate_accuracy(model, x, y).accuracy
    report = robust_accuracy(model, (x, y), {"attack": attack.build()}, batch_size=1000)
    return report.attacks[0].robust_accuracy
