"""Post-training quantisation: a trained float model → an ``IntegerNetwork``.

Walks the model's operations (``program.py``) in order and, for each, picks integer weights and
scales so the integer network tracks the float one:

* weights: symmetric ``weight_bits``-bit integers, one scale per output channel (or per layer),
  the clipping chosen per channel to minimise the squared rounding error; the logits layer has
  one scale for all classes, so the argmax of integer logits is the float argmax;
* biases: integers in the accumulator's units;
* ReLU: one table per channel mapping the rounded accumulator to an ``activation_bits``-bit
  unsigned activation; its scale is calibrated on training images (least squared error of
  the quantised activations, measured through the integer layers before it);
* accumulators: sized from worst-case interval bounds over every possible input image, then
  rounded to ``lookup_bits`` bits before each table, the ≤ 8-bit input a bootstrap can afford.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.crypto.errors import UnsupportedModelError
from robustlab.crypto.layers import (
    PLAIN,
    Conv,
    Dense,
    Flatten,
    Layer,
    Lookup,
    SumPool,
    int_array,
)
from robustlab.crypto.network import IntegerNetwork
from robustlab.crypto.program import Affine, Flat, FloatArray, Operation, Pool, read_program
from robustlab.crypto.rounding import IntArray, round_scalar, signed_bits
from robustlab.errors import ConfigError

MAX_LOOKUP_BITS = 8
CLIP_RATIOS = np.linspace(0.3, 1.0, 36)
ACTIVATION_RATIOS = np.linspace(0.1, 1.2, 56)


@dataclass(frozen=True)
class QuantSpec:
    """Bit widths of an integer network; validated on construction."""

    weight_bits: int = 3
    """Signed weights in [-(2**(b-1) - 1), 2**(b-1) - 1]; 3 bits: -3..3."""
    activation_bits: int = 3
    """Unsigned activations 0..2**a - 1, the outputs of each table."""
    input_bits: int = 1
    """Pixels become 0..2**i - 1; one bit is a black-and-white image."""
    lookup_bits: int = 6
    """Width of every table's input after rounding; at most 8."""
    per_channel: bool = True
    """One weight scale per output channel of hidden layers (else one per layer)."""

    def __post_init__(self) -> None:
        for name, low, high in (
            ("weight_bits", 2, 16),
            ("activation_bits", 1, 8),
            ("input_bits", 1, 8),
            ("lookup_bits", 1, MAX_LOOKUP_BITS),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")

    @property
    def input_levels(self) -> int:
        return int(2**self.input_bits - 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _weight_scales(weight: FloatArray, bits: int, axis: int | None) -> FloatArray:
    """Per-output-channel (``axis``) or per-tensor scales minimising the squared error."""
    qmax = 2 ** (bits - 1) - 1
    moved = weight.reshape(-1, 1) if axis is None else np.moveaxis(weight, axis, 0)
    rows = moved.reshape(moved.shape[0], -1) if axis is not None else moved.T
    peak = np.abs(rows).max(axis=1)
    peak = np.where(peak > 0, peak, 1.0)
    best_error = np.full(rows.shape[0], np.inf)
    best_scale = peak / qmax
    for ratio in CLIP_RATIOS:
        scale = ratio * peak / qmax
        quantised = np.clip(np.rint(rows / scale[:, None]), -qmax, qmax) * scale[:, None]
        error = ((rows - quantised) ** 2).sum(axis=1)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best_scale = np.where(better, scale, best_scale)
    scales: FloatArray = best_scale
    return scales


def _activation_scale(values: FloatArray, bits: int) -> float:
    """The scale of unsigned ``bits``-bit ReLU outputs with least squared error."""
    qmax = 2**bits - 1
    positive = np.maximum(values.reshape(-1), 0.0)
    top = float(np.quantile(positive, 0.9999)) if positive.size else 0.0
    if top <= 0:
        return 1.0
    best_scale, best_error = top / qmax, np.inf
    for ratio in ACTIVATION_RATIOS:
        scale = ratio * top / qmax
        error = float(((positive - np.clip(np.rint(positive / scale), 0, qmax) * scale) ** 2).sum())
        if error < best_error:
            best_scale, best_error = scale, error
    return float(best_scale)


def rounding_plan(low: int, high: int, lookup_bits: int) -> tuple[int, int]:
    """(accumulator bits, lsbs to remove) so that every value in [low, high] — and its rounded
    value, which may round up past ``high`` — fits, and the table input has ``lookup_bits``."""
    bits = signed_bits(low, high)
    while True:
        lsbs = max(0, bits - lookup_bits)
        needed = signed_bits(min(low, round_scalar(low, lsbs)), max(high, round_scalar(high, lsbs)))
        if needed <= bits:
            return bits, lsbs
        bits = needed


@dataclass
class _State:
    """The integer tensor being built, its calibration values and worst-case bounds."""

    values: IntArray
    low: IntArray
    high: IntArray
    scale: FloatArray
    """Real value of one integer unit, per channel (shape (C,)) or one for all."""
    accumulator: bool
    """True between an affine layer and its ReLU: values still need a table."""


def _broadcast(per_channel: FloatArray, ndim: int) -> FloatArray:
    return per_channel.reshape((1, -1) + (1,) * (ndim - 2))


@dataclass(frozen=True, eq=False)
class Calibrated:
    """An integer network with the scales it was built with (quantisation-aware training
    simulates the integer network in float with them)."""

    network: IntegerNetwork
    program: list[Operation]
    units: list[FloatArray]
    """After each program operation: the real value of one integer unit, per channel or one."""


def quantize(
    model: nn.Module,
    calibration: torch.Tensor,
    spec: QuantSpec | None = None,
    *,
    meta: dict[str, Any] | None = None,
) -> IntegerNetwork:
    """The integer network of ``model`` (in eval mode), calibrated on ``calibration`` images
    (N, C, H, W) in [0, 1] — training images, never test images."""
    return calibrate(model, calibration, spec, meta=meta).network


def calibrate(
    model: nn.Module,
    calibration: torch.Tensor,
    spec: QuantSpec | None = None,
    *,
    meta: dict[str, Any] | None = None,
) -> Calibrated:
    """``quantize``, keeping the scales."""
    spec = spec or QuantSpec()
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ConfigError("calibration images must be a non-empty (N, C, H, W) tensor")
    c, h, w = (int(v) for v in calibration.shape[1:])
    input_shape = (c, h, w)
    program = read_program(model, input_shape, spec.input_levels)
    probe = IntegerNetwork(input_shape, spec.input_levels, (), 1.0)
    values = probe.quantize_inputs(calibration)
    state = _State(
        values=values,
        low=np.zeros(c, dtype=np.int64),
        high=np.full(c, spec.input_levels, dtype=np.int64),
        scale=np.ones(1),
        accumulator=False,
    )
    layers: list[Layer] = []
    units: list[FloatArray] = []
    last_affine = max(i for i, op in enumerate(program) if isinstance(op, Affine))
    for index, operation in enumerate(program):
        layer = _step(operation, state, spec, per_channel=spec.per_channel and index < last_affine)
        if isinstance(layer, (Dense, Conv, SumPool)):
            layer = layer.with_bits(state.low, state.high)
        if isinstance(layer, Lookup) and isinstance(layers[-1], (Dense, Conv, SumPool)):
            # the accumulator and its rounded value must be hinted to the same width, or
            # concrete reads the difference as an overflow and removes one bit fewer
            layers[-1] = replace(layers[-1], bits=layer.bits)
        state.low, state.high = layer.bounds(state.low, state.high)
        state.values = layer(state.values, PLAIN)
        layers.append(layer)
        units.append(state.scale.copy())
    network = IntegerNetwork(
        input_shape=input_shape,
        input_levels=spec.input_levels,
        layers=tuple(layers),
        output_scale=float(state.scale.reshape(-1)[0]),
        meta={"spec": spec.as_dict(), "calibration_images": len(calibration), **(meta or {})},
    )
    return Calibrated(network, program, units)


def _step(operation: Operation, state: _State, spec: QuantSpec, *, per_channel: bool) -> Layer:
    """The integer layer for one float operation; updates ``state.scale`` and its kind."""
    if isinstance(operation, Flat):
        spatial = int(np.prod(state.values.shape[2:])) if state.values.ndim > 2 else 1
        if state.scale.size > 1:
            state.scale = np.repeat(state.scale, spatial)
        return Flatten(spatial)
    if isinstance(operation, Pool):
        state.scale = state.scale / operation.size**2
        return SumPool(operation.size)
    if isinstance(operation, Affine):
        if state.accumulator:
            raise UnsupportedModelError(
                "two affine layers follow each other without a ReLU between them; an integer "
                "network needs a table (ReLU) to requantise in between"
            )
        state.accumulator = True
        return _affine(operation, state, spec.weight_bits, per_channel)
    if not state.accumulator:
        raise UnsupportedModelError("a ReLU must follow a Linear or Conv2d layer (or its pooling)")
    state.accumulator = False
    return _lookup(state, spec)


def _affine(operation: Affine, state: _State, bits: int, per_channel: bool) -> Dense | Conv:
    """Integer weights for inputs whose unit is ``state.scale`` (one value: a per-layer
    activation scale, or 1 for folded pixels)."""
    if state.scale.size != 1:
        raise UnsupportedModelError("an affine layer's input must have one scale for all channels")
    qmax = 2 ** (bits - 1) - 1
    weight = operation.weight * float(state.scale[0])
    axis = (1 if operation.kind == "dense" else 0) if per_channel else None
    scales = _weight_scales(weight, bits, axis)
    channels = operation.bias.shape[0]
    out_scale = np.broadcast_to(scales, (channels,)).astype(np.float64)
    if operation.kind == "dense":
        integer = np.clip(np.rint(weight / out_scale[None, :]), -qmax, qmax)
    else:
        integer = np.clip(np.rint(weight / out_scale[:, None, None, None]), -qmax, qmax)
    bias = int_array(np.rint(operation.bias / out_scale))
    state.scale = out_scale if per_channel else out_scale[:1].copy()
    if operation.kind == "dense":
        return Dense(int_array(integer), bias)
    return Conv(int_array(integer), bias, operation.stride)


def _lookup(state: _State, spec: QuantSpec) -> Lookup:
    """ReLU and requantisation as one table per channel, on rounded accumulators."""
    qmax = 2**spec.activation_bits - 1
    real = state.values * _broadcast(
        np.broadcast_to(state.scale, (state.low.size,)), state.values.ndim
    )
    activation_scale = _activation_scale(real, spec.activation_bits)
    bits, lsbs = rounding_plan(int(state.low.min()), int(state.high.max()), spec.lookup_bits)
    low = round_scalar(int(state.low.min()), lsbs) >> lsbs
    high = round_scalar(int(state.high.max()), lsbs) >> lsbs
    rounded = (np.arange(low, high + 1, dtype=np.float64) * 2.0**lsbs)[None, :]
    channel_scale = np.broadcast_to(state.scale, (state.low.size,))[:, None]
    tables = np.clip(np.rint(np.maximum(rounded * channel_scale, 0.0) / activation_scale), 0, qmax)
    state.scale = np.array([activation_scale])
    return Lookup(lsbs=lsbs, low=low, tables=int_array(tables), bits=bits)
