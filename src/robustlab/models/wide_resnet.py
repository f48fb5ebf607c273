"""WideResNet-depth-widen (Zagoruyko & Komodakis 2016), CIFAR variant."""

from __future__ import annotations

from collections.abc import Sequence

from robustlab.errors import ConfigError
from robustlab.models import options
from robustlab.models.denoise import denoise_kind, denoise_positions
from robustlab.models.preact import PreActResNet, Stage

STEM_CHANNELS = 16


def wide_resnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    depth: int = 28,
    widen: int = 10,
    dropout: float = 0.0,
    denoise: str | None = None,
    denoise_after: Sequence[int] | None = None,
) -> PreActResNet:
    """Three stages of (depth − 4)/6 pre-activation blocks, 16/32/64·widen channels.

    ``depth`` counts the conv layers on the main path (stem, two per block, and the classifier
    pair), hence the 6n + 4 rule; ``dropout`` sits between each block's two convs. ``denoise``
    adds a feature-denoising block after each stage in ``denoise_after`` (1-3, default all).
    """
    depth = options.integer("depth", depth, minimum=1)
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ConfigError(
            f"option 'depth' must be 6n + 4 for some n >= 1 (10, 16, 22, 28, 34, 40, ...), "
            f"got {depth}"
        )
    widen = options.integer("widen", widen, minimum=1)
    dropout = options.probability("dropout", dropout)
    kind = denoise_kind(denoise)
    denoised = denoise_positions(kind, denoise_after, 3)
    blocks = (depth - 4) // 6
    stages = [
        Stage(16 * widen, blocks, 1),
        Stage(32 * widen, blocks, 2),
        Stage(64 * widen, blocks, 2),
    ]
    return PreActResNet(
        input_shape[0],
        num_classes,
        stem_channels=STEM_CHANNELS,
        stages=stages,
        dropout=dropout,
        denoise=kind,
        denoise_after=denoised,
    )
