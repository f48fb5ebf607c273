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
* accumulators: sized per channel from calibration images plus a margin (``ranges=
  "calibrated"``; images beyond are detected at run time) or from worst-case interval bounds
  over every possible input (``"worst-case"``), centred by a bias offset, then rounded per
  channel to ``lookup_bits`` bits before each table, the ≤ 8-bit input a bootstrap can afford.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
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
from robustlab.crypto.program import (
    Affine,
    Flat,
    FloatArray,
    Operation,
    Pool,
    Relu,
    read_program,
)
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
    ranges: Literal["calibrated", "worst-case"] = "calibrated"
    """Accumulator ranges before each table: from calibration images plus ``margin``
    (fine tables; an image beyond them is detected, see ``IntegerNetwork.checked_logits``),
    or worst-case bounds over every possible input (exact for all, adversarial ones included,
    but coarse tables)."""
    margin: float = 0.1
    """Calibrated ranges are widened by this share of their span on each side."""
    per_channel_rounding: bool = True
    """Each channel rounded to its own range (else one rounding for the widest channel)."""

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
        if self.ranges not in ("calibrated", "worst-case"):
            raise ConfigError(f"ranges must be 'calibrated' or 'worst-case', got {self.ranges!r}")
        if not 0.0 <= self.margin <= 10.0:
            raise ConfigError(f"margin must be in [0, 10] (a share of the span), got {self.margin}")

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
    """The integer tensor being built, its calibration values and its range per channel."""

    values: IntArray
    low: IntArray
    high: IntArray
    scale: FloatArray
    """Real value of one integer unit, per channel (shape (C,)) or one for all."""
    accumulator: bool
    """True between an affine layer and its ReLU: values still need a table."""


def _broadcast(per_channel: npt.ArrayLike, ndim: int) -> Any:
    return np.asarray(per_channel).reshape((1, -1) + (1,) * (ndim - 2))


@dataclass(frozen=True, eq=False)
class Scales:
    """The scales a quantisation chose, by program index: given back to ``calibrate`` they
    are kept, so a network fine-tuned under them quantises to what it was trained for."""

    weights: dict[int, FloatArray] = field(default_factory=dict)
    """Per affine operation: the real value of one accumulator unit per output channel."""
    activations: dict[int, float] = field(default_factory=dict)
    """Per ReLU: the real value of one activation step."""


@dataclass(frozen=True, eq=False)
class Calibrated:
    """An integer network with the scales it was built with (quantisation-aware training
    simulates the integer network in float with them)."""

    network: IntegerNetwork
    program: list[Operation]
    units: list[FloatArray]
    """After each program operation: the real value of one integer unit, per channel or one."""
    scales: Scales


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
    scales: Scales | None = None,
    meta: dict[str, Any] | None = None,
) -> Calibrated:
    """``quantize``, keeping the scales; with ``scales`` (from an earlier ``calibrate``) the
    weight and activation scales are those, and only the accumulator ranges are measured."""
    spec = spec or QuantSpec()
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ConfigError("calibration images must be a non-empty (N, C, H, W) tensor")
    c, h, w = (int(v) for v in calibration.shape[1:])
    input_shape = (c, h, w)
    program = read_program(model, input_shape, spec.input_levels)
    probe = IntegerNetwork(input_shape, spec.input_levels, (), 1.0)
    state = _State(
        values=probe.quantize_inputs(calibration),
        low=np.zeros(c, dtype=np.int64),
        high=np.full(c, spec.input_levels, dtype=np.int64),
        scale=np.ones(1),
        accumulator=False,
    )
    fixed = scales or Scales()
    chosen = Scales()
    layers: list[Layer] = []
    units: list[FloatArray] = []
    last_affine = max(i for i, op in enumerate(program) if isinstance(op, Affine))
    for index, operation in enumerate(program):
        if isinstance(operation, Relu):
            if not state.accumulator:
                raise UnsupportedModelError(
                    "a ReLU must follow a Linear or Conv2d layer (or its pooling)"
                )
            state.accumulator = False
            layer: Layer = _lookup(state, spec, layers, fixed.activations.get(index))
            chosen.activations[index] = float(state.scale[0])
        else:
            layer = _step(operation, state, spec, index < last_affine, fixed.weights.get(index))
            if isinstance(operation, Affine):
                chosen.weights[index] = state.scale.copy()
            if isinstance(layer, (Dense, Conv, SumPool)):
                layer = layer.with_bits(state.low, state.high)
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
    return Calibrated(network, program, units, chosen)


def _step(
    operation: Operation,
    state: _State,
    spec: QuantSpec,
    hidden: bool,
    weight_scales: FloatArray | None,
) -> Layer:
    """The integer layer for one float operation other than ReLU; updates ``state.scale``."""
    if isinstance(operation, Flat):
        spatial = int(np.prod(state.values.shape[2:])) if state.values.ndim > 2 else 1
        if state.scale.size > 1:
            state.scale = np.repeat(state.scale, spatial)
        return Flatten(spatial)
    if isinstance(operation, Pool):
        state.scale = state.scale / operation.size**2
        return SumPool(operation.size)
    assert isinstance(operation, Affine)
    if state.accumulator:
        raise UnsupportedModelError(
            "two affine layers follow each other without a ReLU between them; an integer "
            "network needs a table (ReLU) to requantise in between"
        )
    state.accumulator = True
    per_channel = spec.per_channel and hidden
    return _affine(operation, state, spec.weight_bits, per_channel, weight_scales)


def _affine(
    operation: Affine,
    state: _State,
    bits: int,
    per_channel: bool,
    fixed: FloatArray | None,
) -> Dense | Conv:
    """Integer weights for inputs whose unit is ``state.scale`` (one value: a per-layer
    activation scale, or 1 for folded pixels)."""
    if state.scale.size != 1:
        raise UnsupportedModelError("an affine layer's input must have one scale for all channels")
    qmax = 2 ** (bits - 1) - 1
    weight = operation.weight * float(state.scale[0])
    channels = operation.bias.shape[0]
    if fixed is not None:
        scales = fixed
    else:
        axis = (1 if operation.kind == "dense" else 0) if per_channel else None
        scales = _weight_scales(weight, bits, axis)
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


def accumulator_ranges(
    values: IntArray, low: IntArray, high: IntArray, spec: QuantSpec
) -> tuple[IntArray, IntArray]:
    """Per channel, the accumulator range a table is built for: the worst case [low, high],
    or (``spec.ranges == "calibrated"``) what the calibration ``values`` reach, widened by
    ``spec.margin`` of their span on each side, never beyond the worst case."""
    if spec.ranges == "worst-case":
        return low, high
    axes = (0, *range(2, values.ndim))
    seen_low, seen_high = values.min(axis=axes), values.max(axis=axes)
    pad = spec.margin * (seen_high - seen_low).astype(np.float64)
    wide_low = int_array(np.maximum(np.floor(seen_low - pad), low))
    wide_high = int_array(np.minimum(np.ceil(seen_high + pad), high))
    return wide_low, wide_high


def _channel_plans(
    low: IntArray, high: IntArray, spec: QuantSpec, shiftable: bool
) -> tuple[IntArray, IntArray, IntArray]:
    """(bits, lsbs, offset) per channel. With per-channel rounding each channel is first
    centred (``offset``, a multiple of its rounding step, folded into the bias for free) so
    its range needs as few bits as it can; otherwise one plan covers all channels."""
    channels = low.size
    if not spec.per_channel_rounding:
        bits, lsbs = rounding_plan(int(low.min()), int(high.max()), spec.lookup_bits)
        return (
            np.full(channels, bits, dtype=np.int64),
            np.full(channels, lsbs, dtype=np.int64),
            np.zeros(channels, dtype=np.int64),
        )
    plans = np.zeros((3, channels), dtype=np.int64)
    for c in range(channels):
        lo, hi = int(low[c]), int(high[c])
        bits, lsbs = rounding_plan(lo, hi, spec.lookup_bits)
        offset = 0
        if shiftable:
            step = 1 << lsbs
            offset = -int(np.rint((lo + hi) / 2 / step)) * step
            centred = rounding_plan(lo + offset, hi + offset, spec.lookup_bits)
            if centred[0] <= bits and centred[1] <= lsbs:
                bits, lsbs = centred
            else:
                offset = 0
        plans[:, c] = (bits, lsbs, offset)
    return plans[0], plans[1], plans[2]


def _lookup(
    state: _State, spec: QuantSpec, layers: list[Layer], fixed_scale: float | None
) -> Lookup:
    """ReLU and requantisation as one table per channel, on rounded accumulators.

    Narrows the width of the layer before (``layers[-1]``) to what the tables are built for
    and folds the channels' centring offsets into its bias (updating ``state.values``)."""
    qmax = 2**spec.activation_bits - 1
    channels = state.low.size
    channel_scale = np.broadcast_to(state.scale, (channels,)).astype(np.float64)
    real = state.values * _broadcast(channel_scale, state.values.ndim)
    activation_scale = fixed_scale or _activation_scale(real, spec.activation_bits)
    low, high = accumulator_ranges(state.values, state.low, state.high, spec)
    previous = layers[-1]
    shiftable = isinstance(previous, (Dense, Conv))
    bits, lsbs, offsets = _channel_plans(low, high, spec, shiftable)
    if isinstance(previous, (Dense, Conv)) and offsets.any():
        layers[-1] = previous = replace(previous, bias=int_array(previous.bias + offsets))
        state.values = state.values + _broadcast(offsets, state.values.ndim)
    assert isinstance(previous, (Dense, Conv, SumPool))
    # the accumulator's hint is the compiled range: the widest channel's width
    layers[-1] = replace(previous, bits=int(bits.max()))
    table_bits = bits - lsbs
    first = -(np.int64(1) << (table_bits - 1))  # every input of a table_bits-bit lookup
    entries = int(1 << int(table_bits.max()))
    index = first[:, None] + np.arange(entries)[None, :]
    rounded = (index * (np.int64(1) << lsbs)[:, None] - offsets[:, None]).astype(np.float64)
    tables = np.clip(
        np.rint(np.maximum(rounded * channel_scale[:, None], 0.0) / activation_scale), 0, qmax
    )
    state.scale = np.array([activation_scale])
    return Lookup(lsbs=int_array(lsbs), low=int_array(first), tables=int_array(tables), bits=bits)
