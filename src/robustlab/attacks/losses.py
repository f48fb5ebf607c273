"""Per-example attack objectives, written once: cross-entropy, CW margin and DLR.

Every loss returns one value per example and is to be *maximised* by an untargeted attack.
Targeted variants are maximised too (they measure progress toward the target), so the attack
loop never flips signs itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from robustlab.registry import Registry

AttackLoss = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _true_and_best_other(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, labels[:, None], float("-inf"))
    return true, others.amax(dim=1)


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    if target is None:
        return F.cross_entropy(logits, labels, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def cw_margin(
    logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Carlini–Wagner margin: best other logit minus the true one (positive = fooled)."""
    if target is None:
        true, other = _true_and_best_other(logits, labels)
        return other - true
    wanted, other = _true_and_best_other(logits, target)
    return wanted - other


def dlr(
    logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020): the CW margin made scale-invariant."""
    ordered = logits.sort(dim=1, descending=True).values
    if target is None:
        true, other = _true_and_best_other(logits, labels)
        scale = (ordered[:, 0] - ordered[:, 2]).clamp_min(1e-12)
        return (other - true) / scale
    true = logits.gather(1, labels[:, None]).squeeze(1)
    wanted = logits.gather(1, target[:, None]).squeeze(1)
    scale = (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3])).clamp_min(1e-12)
    return (wanted - true) / scale


LOSSES: Registry[AttackLoss] = Registry("attack loss")
LOSSES.add("ce", cross_entropy, description="cross-entropy")
LOSSES.add("cw", cw_margin, description="Carlini-Wagner logit margin")
LOSSES.add("dlr", dlr, description="difference of logits ratio")
