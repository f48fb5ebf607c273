"""The wrapper every built model has: normalisation first, then the architecture's body."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.models.normalize import Normalize


class Classifier(nn.Module):
    """``body(normalize(x))`` for x in [0, 1]; returns logits.

    One wrapper for all architectures so no builder can forget the normalisation, and state-dict
    keys are uniformly ``normalize.*`` and ``body.*``.
    """

    def __init__(self, normalize: Normalize, body: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize  # registered first: it is the model's first child
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.body(self.normalize(x))
        return logits
