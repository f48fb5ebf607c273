"""A small CNN an integer network can run: valid convolution, ReLU, average pooling (a sum in
integers), then one linear layer. Register with
``MODELS.add("fhe-cnn", sum_pool_cnn, description=...)`` to train it with ``robustlab train``.

Every ReLU output is a table lookup under FHE, so a stride and few channels keep the lookups
per image (channels × positions) small.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from robustlab.errors import ConfigError
from robustlab.models import options


def sum_pool_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    channels: int = 4,
    kernel: int = 3,
    stride: int = 1,
    pool: int = 2,
) -> nn.Sequential:
    """conv (``channels``, ``kernel``×``kernel``, ``stride``) → ReLU → avg-pool ``pool`` →
    flatten → linear."""
    channels = options.integer("channels", channels, minimum=1)
    kernel = options.integer("kernel", kernel, minimum=1)
    stride = options.integer("stride", stride, minimum=1)
    pool = options.integer("pool", pool, minimum=1)
    c, h, w = input_shape
    conv_h, conv_w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    pooled_h, pooled_w = conv_h // pool, conv_w // pool
    if min(pooled_h, pooled_w) < 1:
        raise ConfigError(
            f"kernel={kernel}, stride={stride}, pool={pool} leave nothing of a {h}×{w} input"
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv"] = nn.Conv2d(c, channels, kernel_size=kernel, stride=stride)
    layers["relu"] = nn.ReLU()
    layers["pool"] = nn.AvgPool2d(pool)
    layers["flatten"] = nn.Flatten()
    layers["out"] = nn.Linear(channels * pooled_h * pooled_w, num_classes)
    return nn.Sequential(layers)
