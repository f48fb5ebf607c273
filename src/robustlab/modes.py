"""Temporarily switch a model's mode and restore it exactly, submodule by submodule."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; every submodule's own previous flag afterwards.

    Restoring per submodule (not just ``model.train(was_training)``) keeps deliberately frozen
    parts, such as BatchNorm layers held in eval mode during fine-tuning, as they were.
    """
    previous = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in previous.items():
            module.training = training
