"""Fake quantisation of weights to k bits: each weight is rounded to the nearest of 2^k − 1
symmetric levels and stored back as a float, so the model computes exactly what a k-bit
integer network with float scales would."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.compression.weights import compressible_weights
from robustlab.errors import ConfigError

MIN_BITS = 2
MAX_BITS = 16


def check_bits(bits: int, field: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"{field} must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return bits


def quantize_weights(model: nn.Module, bits: int) -> None:
    """Round every conv and linear weight to ``bits``-bit symmetric levels, in place.

    One scale per output channel (row of a linear layer, filter of a conv), the usual choice
    for weights: a per-tensor scale lets one large filter wipe out the small ones at low bits.
    """
    bits = check_bits(bits)
    levels = 2 ** (bits - 1) - 1  # symmetric: -levels..levels, zero exactly representable
    with torch.no_grad():
        for weight in compressible_weights(model).values():
            rows = weight.flatten(1) if weight.dim() > 1 else weight.view(1, -1)
            scale = rows.abs().amax(dim=1, keepdim=True) / levels
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            rounded = torch.clamp(torch.round(rows / scale), -levels, levels) * scale
            weight.copy_(rounded.view_as(weight))
