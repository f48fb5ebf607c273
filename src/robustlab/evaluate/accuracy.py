"""Clean accuracy and loss of a classifier on an in-memory split."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.batching import chunked_forward
from robustlab.errors import ConfigError
from robustlab.modes import eval_mode


@dataclass(frozen=True)
class AccuracyResult:
    accuracy: float
    loss: float
    count: int


@torch.no_grad()
def require_positive(field: str, value: object, meaning: str | None = None) -> None:
    """An image count or batch size is an integer >= 1: a slice ``[:count]`` would silently
    take every image but the last ``-count`` for a negative count, and none for 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        named = field if meaning is None else f"{field} ({meaning})"
        raise ConfigError(f"{named} must be an integer >= 1, got {value!r}")


def evaluate_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 1000,
    device: torch.device | None = None,
) -> AccuracyResult:
    """Score ``model`` in eval mode; its previous train/eval mode is restored afterwards."""
    require_positive("evaluate_accuracy: batch_size", batch_size)
    if len(images) != len(labels):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
    if len(images) == 0:
        return AccuracyResult(accuracy=float("nan"), loss=float("nan"), count=0)
    target = device or next(model.parameters()).device
    correct = 0
    loss_sum = 0.0
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(target, non_blocking=True)
            y = labels[start : start + batch_size].to(target, non_blocking=True)
            logits = chunked_forward(model, x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == y).sum())
    count = len(images)
    return AccuracyResult(accuracy=correct / count, loss=loss_sum / count, count=count)
