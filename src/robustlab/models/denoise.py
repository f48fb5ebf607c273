"""Feature-denoising blocks (Xie et al. 2019, "Feature denoising for improving adversarial
robustness"), inserted between a network's stages.

An adversarial perturbation that is tiny in pixels grows into large noise in the feature maps;
a block denoises the features and adds the result back through a 1×1 convolution:
``out = x + conv(denoise(x))``. The 1×1 convolution starts at zero (weight and bias), so a
freshly built block is exactly the identity and a network with blocks starts out computing
the same function as without them; training then decides how much denoising to mix in. (The
paper zero-initialises a BatchNorm scale after the 1×1 convolution instead; zeroing the
convolution has the same effect with one layer fewer.)

Kinds, as compared in the paper:

* ``gaussian``: non-local means with softmax weights over all positions,
  ``y_i = Σ_j softmax_j(θ(x_i)·φ(x_j) / √d) x_j``; the paper's best variant.
* ``dot``: the same with plain dot-product weights divided by the number of positions.
* ``mean``: the local 3×3 mean filter (border positions average only the pixels present).
* ``median``: the local 3×3 median filter (borders replicated).

``θ`` and ``φ`` are 1×1 embeddings to half the channels (``embed=True``, as in the paper);
without them the raw features are compared.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import ConfigError

DENOISE_KINDS = ("gaussian", "dot", "mean", "median")
EMBED_INIT_STD = 0.01
"""The paper's initial std of the θ/φ embeddings: near-uniform softmax weights at the start."""


class DenoisingBlock(nn.Module):
    """``x + conv1×1(denoise(x))`` with the 1×1 convolution zero-initialised (identity at init)."""

    def __init__(self, channels: int, kind: str, embed: bool = True) -> None:
        super().__init__()
        if kind not in DENOISE_KINDS:
            raise ValueError(f"unknown denoising kind {kind!r}; known: {', '.join(DENOISE_KINDS)}")
        self.kind = kind
        self.theta: nn.Conv2d | None = None
        self.phi: nn.Conv2d | None = None
        if embed and kind in ("gaussian", "dot"):
            inner = max(1, channels // 2)
            self.theta = nn.Conv2d(channels, inner, 1, bias=False)
            self.phi = nn.Conv2d(channels, inner, 1, bias=False)
        self.conv = nn.Conv2d(channels, channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small embeddings and a zero output convolution; networks that re-initialise every
        convolution (``PreActResNet``) call this afterwards to restore the identity start."""
        for embedding in (self.theta, self.phi):
            if embedding is not None:
                nn.init.normal_(embedding.weight, std=EMBED_INIT_STD)
        nn.init.zeros_(self.conv.weight)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.conv(self.denoise(x))
        return out

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """The filtered feature map, before the 1×1 convolution and the residual sum."""
        if self.kind == "mean":
            return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        if self.kind == "median":
            padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
            patches = padded.unfold(2, 3, 1).unfold(3, 3, 1)
            return patches.reshape(*x.shape, 9).median(dim=-1).values
        return self._non_local(x)

    def _non_local(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        positions = height * width
        values = x.reshape(batch, channels, positions)
        theta = values if self.theta is None else self.theta(x).flatten(2)
        phi = values if self.phi is None else self.phi(x).flatten(2)
        if self.kind == "gaussian":
            similarity = theta.transpose(1, 2) @ phi / math.sqrt(theta.shape[1])
            weights = similarity.softmax(dim=-1)  # weights[n, i, j]: position j's share in i
            return (values @ weights.transpose(1, 2)).reshape_as(x)
        # dot: Σ_j (θ_i·φ_j) x_j / N, associated as (x φᵀ) θ so no N×N matrix is formed
        return ((values @ phi.transpose(1, 2)) @ theta / positions).reshape_as(x)


def denoise_kind(value: object) -> str | None:
    """The ``denoise`` option: None (no blocks) or one of ``DENOISE_KINDS``."""
    if value is None or (isinstance(value, str) and value in DENOISE_KINDS):
        return value
    raise ConfigError(
        f"option 'denoise' must be one of {', '.join(DENOISE_KINDS)} (or null for no "
        f"denoising blocks), got {value!r}"
    )


def denoise_positions(
    kind: str | None, value: object, count: int, what: str = "stage"
) -> tuple[int, ...]:
    """The ``denoise_after`` option: 1-based ``what`` numbers, by default all ``count``.

    Empty when ``kind`` is None; naming positions without a kind is refused, since the blocks
    it asks for would silently not exist.
    """
    if kind is None:
        if value is not None:
            raise ConfigError(
                f"option 'denoise_after' needs option 'denoise' (a kind: "
                f"{', '.join(DENOISE_KINDS)}), got denoise_after={value!r} without it"
            )
        return ()
    if value is None:
        return tuple(range(1, count + 1))
    expected = f"a non-empty list of distinct {what} numbers from 1 to {count}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"option 'denoise_after' must be {expected}, got {value!r}")
    for item in value:
        if (
            isinstance(item, bool)
            or not isinstance(item, numbers.Integral)
            or not 1 <= int(item) <= count
        ):
            raise ConfigError(
                f"option 'denoise_after' must be {expected}; {item!r} is out of range"
            )
    if len(set(value)) != len(value):
        raise ConfigError(f"option 'denoise_after' must be {expected}; got repeats in {value!r}")
    return tuple(sorted(int(item) for item in value))
