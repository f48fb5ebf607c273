"""A plain multilayer perceptron: the no-convolution baseline for capacity comparisons."""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from robustlab.models import options


def mlp(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    depth: int = 3,
    width: int = 256,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Flatten → ``depth`` × (Linear ``width`` → ReLU [→ Dropout]) → Linear ``num_classes``.

    Layers are named (``fc1``, ..., ``out``) so the dropout setting does not change state-dict
    keys.
    """
    depth = options.integer("depth", depth, minimum=1)
    width = options.integer("width", width, minimum=1)
    dropout = options.probability("dropout", dropout)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["flatten"] = nn.Flatten()
    in_features = math.prod(input_shape)
    for index in range(1, depth + 1):
        layers[f"fc{index}"] = nn.Linear(in_features, width)
        layers[f"relu{index}"] = nn.ReLU()
        if dropout > 0:
            layers[f"dropout{index}"] = nn.Dropout(dropout)
        in_features = width
    layers["out"] = nn.Linear(in_features, num_classes)
    return nn.Sequential(layers)
