"""The wrapper every built model has: normalisation first, then the architecture's body."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from robustlab.models.normalize import Normalize


class Classifier(nn.Module):
    """``body(normalize(x))`` for x in [0, 1]; returns logits.

    One wrapper for all architectures so no builder can forget the normalisation, and state-dict
    keys are uniformly ``normalize.*`` and ``body.*``.
    """

    frozen_forward_safe: ClassVar[bool] = True
    """Its forward is a fixed function of its input and children (see ``robustlab.batching``);
    whether the whole model may be frozen is decided by its children's types."""

    def __init__(self, normalize: Normalize, body: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize  # registered first: it is the model's first child
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.body(self.normalize(x))
        return logits
