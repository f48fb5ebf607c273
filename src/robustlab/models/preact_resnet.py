"""Pre-activation ResNet-18, CIFAR variant: the usual architecture for adversarial training."""

from __future__ import annotations

from collections.abc import Sequence

from robustlab.models import options
from robustlab.models.denoise import denoise_kind, denoise_positions
from robustlab.models.preact import PreActResNet, Stage


def preact_resnet18(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    width: int = 64,
    denoise: str | None = None,
    denoise_after: Sequence[int] | None = None,
) -> PreActResNet:
    """3×3 stem, four stages of two blocks (width·1/2/4/8 channels, strides 1/2/2/2).

    ``width`` (64 in the paper) scales every stage, for capacity sweeps; unlike the common
    PyTorch CIFAR code this keeps the paper's final BN-ReLU before pooling (+2·8·width params).
    ``denoise`` adds a feature-denoising block after each stage in ``denoise_after`` (1-4,
    default all four).
    """
    width = options.integer("width", width, minimum=1)
    kind = denoise_kind(denoise)
    denoised = denoise_positions(kind, denoise_after, 4)
    stages = [
        Stage(width, 2, 1),
        Stage(2 * width, 2, 2),
        Stage(4 * width, 2, 2),
        Stage(8 * width, 2, 2),
    ]
    return PreActResNet(
        input_shape[0],
        num_classes,
        stem_channels=width,
        stages=stages,
        denoise=kind,
        denoise_after=denoised,
    )
