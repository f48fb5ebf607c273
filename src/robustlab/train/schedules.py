"""Optimisers and learning-rate schedules for one phase.

The learning rate is a pure function of the position in the phase (fractional epoch), set
before every batch. Nothing about it needs saving in a checkpoint, so a resumed run follows
exactly the same schedule as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from robustlab.config import OptimizerConfig, ScheduleConfig


def build_optimizer(
    config: OptimizerConfig, parameters: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    params = [p for p in parameters if p.requires_grad]
    if config.type == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    if config.type == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def learning_rate(
    schedule: ScheduleConfig, base_lr: float, position: float, phase_epochs: int
) -> float:
    """Learning rate at ``position`` epochs into a phase of ``phase_epochs`` epochs."""
    if schedule.warmup_epochs > 0 and position < schedule.warmup_epochs:
        return base_lr * (position / schedule.warmup_epochs)
    if schedule.type == "constant":
        return base_lr
    if schedule.type == "cosine":
        span = max(phase_epochs - schedule.warmup_epochs, 1e-12)
        progress = min(max((position - schedule.warmup_epochs) / span, 0.0), 1.0)
        floor = base_lr * schedule.final_fraction
        return floor + (base_lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule.type == "step":
        return base_lr * schedule.gamma ** math.floor(position / schedule.step_size)
    if schedule.type == "multistep":
        passed = sum(1 for milestone in schedule.milestones if position >= milestone)
        return base_lr * schedule.gamma**passed
    # cyclic: linear 0 -> base_lr at peak_fraction of the phase, then linear down to the floor
    # (the one-cycle shape used by fast adversarial training).
    progress = min(max(position / phase_epochs, 0.0), 1.0)
    floor = base_lr * schedule.final_fraction
    if progress <= schedule.peak_fraction:
        return base_lr * progress / schedule.peak_fraction
    fall = (progress - schedule.peak_fraction) / (1 - schedule.peak_fraction)
    return base_lr + (floor - base_lr) * fall


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
