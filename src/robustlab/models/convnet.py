"""The thesis's plain CNNs (Chapter 5) and the ``convnet(depth, width)`` family containing both.

One implementation: ``thesis-shallow`` is ``convnet(depth=2, width=1)`` and ``thesis-deep`` is
``convnet(depth=3, width=1)``, so capacity sweeps over the family include the thesis models
exactly (same layers, same state-dict keys).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from robustlab.errors import ConfigError
from robustlab.models import options
from robustlab.models.denoise import DenoisingBlock, denoise_kind, denoise_positions

FIRST_CHANNELS = 32
LATER_CHANNELS = 64
HIDDEN_UNITS = 128
FEATURE_DROPOUT = 0.25
HIDDEN_DROPOUT = 0.5
MIN_WIDTH = 1 / FIRST_CHANNELS
"""The smallest width that leaves every layer at least one channel or unit."""


def _scaled(base: int, width: float) -> int:
    return max(1, round(base * width))


def convnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    depth: int = 2,
    width: float = 1.0,
    dropout: bool = True,
    denoise: str | None = None,
    denoise_after: Sequence[int] | None = None,
) -> nn.Sequential:
    """``depth`` valid 3×3 convs (ReLU) → 2×2 max-pool → dropout → FC 128·width → dropout → FC.

    Width multiplies every hidden size (conv channels 32/64 and the 128-unit FC layer), so the
    family is a true width multiplier. Layers are named (``conv1``, ``fc1``, ...) so turning
    dropout off does not shift the state-dict keys.

    ``denoise`` (a ``DenoisingBlock`` kind) inserts a feature-denoising block ``denoise<i>``
    after the ReLU of each conv ``i`` in ``denoise_after`` (1-based; default every conv). Without
    it the layers and state-dict keys are exactly those of the plain network.
    """
    depth = options.integer("depth", depth, minimum=1)
    width = options.number("width", width, minimum=MIN_WIDTH, label=f"1/{FIRST_CHANNELS}")
    dropout = options.boolean("dropout", dropout)
    kind = denoise_kind(denoise)
    denoised = denoise_positions(kind, denoise_after, depth, what="conv")
    channels, height, breadth = input_shape
    conv_height, conv_breadth = height - 2 * depth, breadth - 2 * depth
    if min(conv_height, conv_breadth) < 2:
        deepest = (min(height, breadth) - 2) // 2
        fits = (
            f"the deepest that fits is depth={deepest}"
            if deepest >= 1
            else "inputs must be at least 4×4"
        )
        raise ConfigError(
            f"depth={depth} is too deep for input {channels}×{height}×{breadth}: {depth} valid "
            f"3×3 convolutions leave {max(conv_height, 0)}×{max(conv_breadth, 0)} and the 2×2 "
            f"max-pool needs at least 2×2; {fits}"
        )

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_channels = channels
    for index in range(1, depth + 1):
        out_channels = _scaled(FIRST_CHANNELS if index == 1 else LATER_CHANNELS, width)
        layers[f"conv{index}"] = nn.Conv2d(in_channels, out_channels, kernel_size=3)
        layers[f"relu{index}"] = nn.ReLU()
        if kind is not None and index in denoised:
            layers[f"denoise{index}"] = DenoisingBlock(out_channels, kind)
        in_channels = out_channels
    layers["pool"] = nn.MaxPool2d(2)
    if dropout:
        layers["dropout1"] = nn.Dropout(FEATURE_DROPOUT)
    layers["flatten"] = nn.Flatten()
    hidden = _scaled(HIDDEN_UNITS, width)
    features = in_channels * (conv_height // 2) * (conv_breadth // 2)
    layers["fc1"] = nn.Linear(features, hidden)
    layers["relu_fc1"] = nn.ReLU()
    if dropout:
        layers["dropout2"] = nn.Dropout(HIDDEN_DROPOUT)
    layers["fc2"] = nn.Linear(hidden, num_classes)
    return nn.Sequential(layers)


def thesis_shallow(
    input_shape: tuple[int, int, int], num_classes: int, *, dropout: bool = True
) -> nn.Sequential:
    """The classic Keras MNIST CNN (thesis Chapter 5); 1,199,882 parameters on 1×28×28/10."""
    return convnet(input_shape, num_classes, depth=2, width=1.0, dropout=dropout)


def thesis_deep(
    input_shape: tuple[int, int, int], num_classes: int, *, dropout: bool = True
) -> nn.Sequential:
    """``thesis-shallow`` with a third 64-channel 3×3 conv before the pool."""
    return convnet(input_shape, num_classes, depth=3, width=1.0, dropout=dropout)
