"""A trained model read as a plain list of float operations, the quantiser's input.

Only what an integer network can express is accepted: linear and valid convolution layers,
ReLU, non-overlapping average pooling (it becomes a sum) and flatten; dropout and identity are
skipped (they do nothing at inference). The model's normalisation is folded into the first
affine layer here, so the program maps pixels in [0, 1] straight to logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from torch import nn

from robustlab.crypto.errors import UnsupportedModelError
from robustlab.models import Classifier

FloatArray = npt.NDArray[np.float64]

SUPPORTED = "Linear, Conv2d (no padding, groups=1), ReLU, AvgPool2d (stride = kernel), Flatten"


@dataclass(frozen=True, eq=False)
class Affine:
    kind: Literal["dense", "conv"]
    weight: FloatArray
    """(in, out) for dense; (out, in, kh, kw) for conv."""
    bias: FloatArray
    stride: int = 1


@dataclass(frozen=True)
class Relu:
    pass


@dataclass(frozen=True)
class Pool:
    size: int


@dataclass(frozen=True)
class Flat:
    pass


Operation = Affine | Relu | Pool | Flat


def _numpy(tensor: object) -> FloatArray:
    import torch

    assert isinstance(tensor, torch.Tensor)
    return np.asarray(tensor.detach().cpu().double().numpy())


def _conv(module: nn.Conv2d, name: str) -> Affine:
    stride = module.stride if isinstance(module.stride, tuple) else (module.stride,) * 2
    padding = module.padding if isinstance(module.padding, tuple) else (module.padding,) * 2
    dilation = module.dilation if isinstance(module.dilation, tuple) else (module.dilation,) * 2
    if any(p != 0 for p in padding) or module.groups != 1 or any(d != 1 for d in dilation):
        raise UnsupportedModelError(
            f"layer {name} ({module}): only valid convolutions (padding=0, groups=1, "
            "dilation=1) become integer layers; build the model without padding"
        )
    if stride[0] != stride[1]:
        raise UnsupportedModelError(f"layer {name} ({module}): the stride must be square")
    bias = _numpy(module.bias) if module.bias is not None else np.zeros(module.out_channels)
    return Affine("conv", _numpy(module.weight), bias, int(stride[0]))


def _pool(module: nn.AvgPool2d, name: str) -> Pool:
    kernel = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
    stride = module.stride if isinstance(module.stride, int) else module.stride[0]
    square = isinstance(module.kernel_size, int) or len(set(module.kernel_size)) == 1
    if not square or stride != kernel or module.padding not in (0, (0, 0)):
        raise UnsupportedModelError(
            f"layer {name} ({module}): average pooling must be square, non-overlapping "
            "(stride = kernel_size) and unpadded to become a sum"
        )
    return Pool(int(kernel))


def _walk(module: nn.Module, prefix: str) -> list[Operation]:
    if isinstance(module, nn.Sequential):
        operations: list[Operation] = []
        for child_name, child in module.named_children():
            operations += _walk(child, f"{prefix}.{child_name}" if prefix else child_name)
        return operations
    if isinstance(module, nn.Linear):
        bias = _numpy(module.bias) if module.bias is not None else np.zeros(module.out_features)
        return [Affine("dense", _numpy(module.weight).T.copy(), bias)]
    if isinstance(module, nn.Conv2d):
        return [_conv(module, prefix)]
    if isinstance(module, nn.ReLU):
        return [Relu()]
    if isinstance(module, nn.AvgPool2d):
        return [_pool(module, prefix)]
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1:
            raise UnsupportedModelError(f"layer {prefix}: Flatten must start at dimension 1")
        return [Flat()]
    if isinstance(module, (nn.Dropout, nn.Identity)):
        return []
    raise UnsupportedModelError(
        f"layer {prefix or '(model)'} is {type(module).__name__}, which an integer network "
        f"cannot express; supported: {SUPPORTED}"
    )


def read_program(
    model: nn.Module, input_shape: tuple[int, int, int], input_levels: int
) -> list[Operation]:
    """The model's operations on integer pixels 0..input_levels, normalisation folded in."""
    if isinstance(model, Classifier):
        mean = _numpy(model.normalize.mean).reshape(-1)
        std = _numpy(model.normalize.std).reshape(-1)
        operations = _walk(model.body, "body")
    else:
        mean = np.zeros(input_shape[0])
        std = np.ones(input_shape[0])
        operations = _walk(model, "")
    first = next((i for i, op in enumerate(operations) if isinstance(op, Affine)), None)
    if first is None or any(not isinstance(op, Flat) for op in operations[:first]):
        raise UnsupportedModelError(
            "the model must start with a Linear or Conv2d layer (after an optional Flatten), "
            "so that its normalisation can be folded into it"
        )
    if not isinstance(operations[-1], Affine):
        raise UnsupportedModelError("the model must end with a Linear layer giving the logits")
    operations[first] = _fold(operations[first], mean, std, input_shape, input_levels)
    return operations


def _fold(
    layer: Operation,
    mean: FloatArray,
    std: FloatArray,
    input_shape: tuple[int, int, int],
    input_levels: int,
) -> Affine:
    """``layer((x/levels - mean)/std)`` as one affine map of the integer pixels x."""
    assert isinstance(layer, Affine)
    channels, height, width = input_shape
    if len(mean) != channels:
        raise UnsupportedModelError(
            f"the model normalises {len(mean)} channel(s) but the input has {channels}"
        )
    if layer.kind == "dense":
        if layer.weight.shape[0] != channels * height * width:
            raise UnsupportedModelError(
                f"the first Linear layer takes {layer.weight.shape[0]} features but the input "
                f"{channels}×{height}×{width} has {channels * height * width}"
            )
        per_feature_std = np.repeat(std, height * width)
        per_feature_mean = np.repeat(mean, height * width)
        weight = layer.weight / (per_feature_std[:, None] * input_levels)
        bias = layer.bias - (per_feature_mean / per_feature_std) @ layer.weight
        return Affine("dense", weight, bias)
    scale = 1.0 / (std * input_levels)
    weight = layer.weight * scale[None, :, None, None]
    shift = (mean / std)[None, :, None, None] * layer.weight
    bias = layer.bias - shift.sum(axis=(1, 2, 3))
    return Affine("conv", weight, bias, layer.stride)
