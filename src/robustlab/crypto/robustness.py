"""Does quantisation keep robustness? The integer network judged on adversarial images made
against its float surrogate (the integer network has no gradient to follow).

A transfer setting: the attack sees the float model, the integer network classifies what the
attack produced. Reported beside the float model's own robust accuracy on the same images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from robustlab.attacks import Attack
from robustlab.crypto.network import IntegerNetwork


@dataclass(frozen=True)
class TransferRobustness:
    images: int
    float_clean: float
    float_robust: float
    integer_clean: float
    integer_robust: float
    """Integer-network accuracy on the float model's adversarial images."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def integer_robustness(
    model: nn.Module,
    network: IntegerNetwork,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack,
    batch_size: int = 500,
) -> TransferRobustness:
    """Clean and robust accuracy of ``model`` and of its integer ``network`` under ``attack``
    run on ``model``."""
    model.eval()
    float_clean = float_robust = integer_clean = integer_robust = 0
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        adversarial = attack(model, x, y)
        with torch.no_grad():
            float_clean += int((model(x).argmax(1) == y).sum())
            float_robust += int((model(adversarial).argmax(1) == y).sum())
        integer_clean += int((torch.from_numpy(network.predict(x)) == y).sum())
        integer_robust += int((torch.from_numpy(network.predict(adversarial)) == y).sum())
    count = max(len(images), 1)
    return TransferRobustness(
        images=len(images),
        float_clean=float_clean / count,
        float_robust=float_robust / count,
        integer_clean=integer_clean / count,
        integer_robust=integer_robust / count,
    )
