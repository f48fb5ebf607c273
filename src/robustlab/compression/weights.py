"""Which tensors compression acts on: the weights of conv and linear layers."""

from __future__ import annotations

import torch
from torch import nn


def compressible_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``module.weight`` of every conv and linear layer, by dotted name, in model order.
    Biases, normalisation and batch norm stay in full precision: they are a sliver of the
    parameters and pruning them changes what a layer computes, not how much it can hold."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            found[f"{name}.weight" if name else "weight"] = module.weight
    return found
