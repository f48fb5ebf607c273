"""Global magnitude pruning (Han et al. 2015): the smallest weights, over all conv and linear
layers together, are set to zero, and masks keep them there during fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustlab.compression.weights import compressible_weights
from robustlab.errors import ConfigError


def check_sparsity(sparsity: float, field: str = "sparsity") -> float:
    """A share of weights to remove: in [0, 1); 1 would leave a network with no weights."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise ConfigError(f"{field} must be a number in [0, 1), got {sparsity!r}")
    if not 0 <= sparsity < 1:
        raise ConfigError(
            f"{field} must be in [0, 1) (the share of weights set to zero), got {sparsity!r}"
        )
    return float(sparsity)


@dataclass(frozen=True)
class PruningMasks:
    """One boolean mask per pruned weight (True: kept)."""

    masks: dict[str, torch.Tensor]

    def apply(self, model: nn.Module) -> None:
        """Zero the pruned weights again (after an optimiser step has moved them)."""
        weights = compressible_weights(model)
        with torch.no_grad():
            for name, mask in self.masks.items():
                weights[name].mul_(mask)

    @property
    def sparsity(self) -> float:
        total = sum(mask.numel() for mask in self.masks.values())
        kept = sum(int(mask.sum()) for mask in self.masks.values())
        return 1 - kept / total if total else 0.0


def prune_by_magnitude(model: nn.Module, sparsity: float) -> PruningMasks:
    """Zero the ``sparsity`` share of conv and linear weights with the smallest magnitude,
    ranked over the whole network, in place; returns the masks that keep them zero.

    Global ranking, not per layer: a layer whose weights matter less loses more of them, which
    is what makes the probe say where a network's capacity sits.
    """
    sparsity = check_sparsity(sparsity)
    weights = compressible_weights(model)
    if not weights:
        raise ConfigError("pruning: the model has no conv or linear weights")
    magnitudes = torch.cat([weight.detach().abs().flatten() for weight in weights.values()])
    removed = round(sparsity * magnitudes.numel())
    if removed == 0:
        masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    else:
        # the removed-th smallest magnitude; ties at it are broken by position so exactly
        # `removed` weights go, whatever the weights' values
        order = torch.argsort(magnitudes, stable=True)
        keep = torch.ones(magnitudes.numel(), dtype=torch.bool, device=magnitudes.device)
        keep[order[:removed]] = False
        masks, start = {}, 0
        for name, weight in weights.items():
            masks[name] = keep[start : start + weight.numel()].view_as(weight)
            start += weight.numel()
    pruned = PruningMasks(masks)
    pruned.apply(model)
    return pruned
