"""Per-channel input normalisation as a layer, so models take inputs in [0, 1] pixel space.

Putting it inside the model (first layer) means every attack's ε and every clamp to [0, 1] is in
pixel units, and the dataset statistics travel with the weights in the state dict.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from robustlab.errors import ConfigError


def _channel_values(field: str, values: Sequence[float] | torch.Tensor) -> list[float]:
    """Plain floats from a list, tuple, NumPy array or tensor, each checked to be finite."""
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    try:
        items = [] if isinstance(values, (str, bytes)) else list(values)
    except TypeError:
        items = []
    if not items:
        raise ConfigError(f"{field} must be a non-empty list of numbers, one per channel")
    checked: list[float] = []
    for index, value in enumerate(items):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{field}[{index}] must be a finite number, got {value!r}")
        checked.append(float(value))
    return checked


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean and std kept as (C, 1, 1) buffers.

    Buffers rather than constants so they follow ``.to(device or dtype)`` and are saved with the
    weights.
    """

    mean: torch.Tensor
    std: torch.Tensor
    frozen_forward_safe: ClassVar[bool] = True
    """A fixed function of input and buffers: safe in an inference graph (robustlab.batching)."""

    def __init__(
        self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
    ) -> None:
        super().__init__()
        mean_values = _channel_values("mean", mean)
        std_values = _channel_values("std", std)
        if len(mean_values) != len(std_values):
            raise ConfigError(
                f"mean and std must have one value per channel each; got {len(mean_values)} "
                f"mean values and {len(std_values)} std values"
            )
        for index, value in enumerate(std_values):
            if value <= 0:
                raise ConfigError(f"std[{index}] must be > 0, got {value!r}")
        self.register_buffer("mean", torch.tensor(mean_values).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std_values).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.4g}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4g}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"
