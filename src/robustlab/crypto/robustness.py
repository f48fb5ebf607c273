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
    clean_out_of_range: int
    """Clean images that left the integer network's calibrated ranges (0 in worst-case mode)."""
    adversarial_out_of_range: int
    """Adversarial images that left them: their encrypted result could differ from the plain
    integer network's, so the encrypted robust accuracy is certain only for the others."""

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
    clean_outside = adversarial_outside = 0
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        adversarial = attack(model, x, y)
        with torch.no_grad():
            float_clean += int((model(x).argmax(1) == y).sum())
            float_robust += int((model(adversarial).argmax(1) == y).sum())
        clean_logits, clean_inside = network.checked_logits(x)
        adversarial_logits, adversarial_inside = network.checked_logits(adversarial)
        integer_clean += int((torch.from_numpy(clean_logits.argmax(1)) == y).sum())
        integer_robust += int((torch.from_numpy(adversarial_logits.argmax(1)) == y).sum())
        clean_outside += int((~clean_inside).sum())
        adversarial_outside += int((~adversarial_inside).sum())
    count = max(len(images), 1)
    return TransferRobustness(
        images=len(images),
        float_clean=float_clean / count,
        float_robust=float_robust / count,
        integer_clean=integer_clean / count,
        integer_robust=integer_robust / count,
        clean_out_of_range=clean_outside,
        adversarial_out_of_range=adversarial_outside,
    )
