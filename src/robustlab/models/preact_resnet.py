"""Pre-activation ResNets, CIFAR variant: ResNet-18 (the usual architecture for adversarial
training) and the depth family around it."""

from __future__ import annotations

from collections.abc import Sequence

from robustlab.errors import ConfigError
from robustlab.models import options
from robustlab.models.denoise import denoise_kind, denoise_positions
from robustlab.models.preact import PreActResNet, Stage

BLOCKS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    26: (3, 3, 3, 3),
    34: (3, 4, 6, 3),
}
"""Blocks in each of the four stages, by depth (the stem, two convs per block and the
classifier): ResNet-18 and -34 as He et al. 2016; 10 and 26 fill in the family for depth
sweeps."""


def preact_resnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    depth: int = 18,
    width: int = 64,
    denoise: str | None = None,
    denoise_after: Sequence[int] | None = None,
) -> PreActResNet:
    """3×3 stem, four stages (width·1/2/4/8 channels, strides 1/2/2/2) of blocks as
    ``BLOCKS_PER_STAGE[depth]``: the pre-activation ResNet family, for depth × width sweeps.

    ``width`` (64 in the paper) scales every stage; unlike the common PyTorch CIFAR code this
    keeps the paper's final BN-ReLU before pooling (+2·8·width params). ``denoise`` adds a
    feature-denoising block after each stage in ``denoise_after`` (1-4, default all four).
    """
    depth = options.integer("depth", depth, minimum=1)
    if depth not in BLOCKS_PER_STAGE:
        known = ", ".join(str(value) for value in BLOCKS_PER_STAGE)
        raise ConfigError(f"option 'depth' must be one of {known}, got {depth}")
    width = options.integer("width", width, minimum=1)
    kind = denoise_kind(denoise)
    denoised = denoise_positions(kind, denoise_after, 4)
    blocks = BLOCKS_PER_STAGE[depth]
    stages = [
        Stage(width, blocks[0], 1),
        Stage(2 * width, blocks[1], 2),
        Stage(4 * width, blocks[2], 2),
        Stage(8 * width, blocks[3], 2),
    ]
    return PreActResNet(
        input_shape[0],
        num_classes,
        stem_channels=width,
        stages=stages,
        denoise=kind,
        denoise_after=denoised,
    )


def preact_resnet18(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    width: int = 64,
    denoise: str | None = None,
    denoise_after: Sequence[int] | None = None,
) -> PreActResNet:
    """Pre-activation ResNet-18: ``preact_resnet`` at depth 18, the usual architecture for
    adversarial training (same layers and state-dict keys)."""
    return preact_resnet(
        input_shape,
        num_classes,
        depth=18,
        width=width,
        denoise=denoise,
        denoise_after=denoise_after,
    )
