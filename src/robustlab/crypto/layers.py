"""The integer layers: what an integer network computes, written once for two backends.

Every layer takes integer tensors and an ``Ops`` backend. With ``PLAIN`` it runs in numpy
int64; with the FHE backend the very same code is traced by concrete-python into an encrypted
circuit, so the plain and encrypted networks cannot drift apart. Only four operations differ
between the backends (``Ops``): hints about bit widths, rounding, table lookups and convolution.
Everything else (matrix products with clear weights, additions, reshapes, sums) is plain numpy
that concrete traces as it is.

Each layer also knows the worst-case range of its outputs for any input in range
(``bounds``). The quantiser sizes accumulators either from those bounds (exact for every
possible image, adversarial ones included) or from calibration images plus a margin (narrower,
so tables are finer); ``RangeCheck`` then tells, per image, whether every value fitted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from robustlab.crypto.rounding import IntArray, round_lsbs, signed_bits

Tensor = Any
"""An int64 numpy array, or a concrete-python tracer while the circuit is being compiled."""

Bounds = tuple[IntArray, IntArray]
"""Per-channel lowest and highest value a layer's output can take."""


class Ops(Protocol):
    """The operations whose encrypted form differs from plain numpy."""

    def hint(self, x: Tensor, bits: int) -> Tensor:
        """Tell the compiler ``x`` needs ``bits`` bits (signed); a no-op in the clear."""

    def round(self, x: Tensor, lsbs: int) -> Tensor:
        """Round to a multiple of ``2**lsbs`` (see ``rounding.round_lsbs``)."""

    def lookup(self, x: Tensor, function: Callable[[IntArray], IntArray]) -> Tensor:
        """Apply an elementwise integer function: a programmable bootstrap under FHE."""

    def conv2d(self, x: Tensor, weight: IntArray, stride: int) -> Tensor:
        """Valid 2-D cross-correlation (PyTorch's ``conv2d``), no bias."""


class PlainOps:
    """The backend for numpy int64 arrays."""

    def hint(self, x: Tensor, bits: int) -> Tensor:
        return x

    def round(self, x: Tensor, lsbs: int) -> Tensor:
        return round_lsbs(x, lsbs)

    def lookup(self, x: Tensor, function: Callable[[IntArray], IntArray]) -> Tensor:
        return function(x)

    def conv2d(self, x: Tensor, weight: IntArray, stride: int) -> Tensor:
        n, _, h, w = x.shape
        out_channels, _, kh, kw = weight.shape
        rows, cols = (h - kh) // stride + 1, (w - kw) // stride + 1
        out = np.zeros((n, out_channels, rows, cols), dtype=np.int64)
        for i in range(kh):  # one shifted, strided view per kernel position
            for j in range(kw):
                patch = x[
                    :,
                    :,
                    i : i + stride * (rows - 1) + 1 : stride,
                    j : j + stride * (cols - 1) + 1 : stride,
                ]
                out += np.einsum("nchw,oc->nohw", patch, weight[:, :, i, j])
        return out


PLAIN = PlainOps()


class RangeCheck(PlainOps):
    """``PLAIN`` that also notes, per image, whether every hinted value fits its width.

    The hints are the compiled circuit's widths: an image whose values all fit is computed
    exactly under encryption; one that overflows somewhere may decrypt to other logits, so it
    must be reported, never counted as agreeing.
    """

    def __init__(self, images: int) -> None:
        self.inside = np.ones(images, dtype=bool)

    def hint(self, x: Tensor, bits: int) -> Tensor:
        if bits > 0:
            low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            axes = tuple(range(1, x.ndim))
            self.inside &= ((x >= low) & (x <= high)).all(axis=axes)
        return x


def _channel_shape(bounds: IntArray, ndim: int) -> IntArray:
    """Per-channel values shaped to broadcast over an (N, C[, H, W]) tensor."""
    return bounds.reshape((1, -1) + (1,) * (ndim - 2))


def _affine_bounds(weight: IntArray, bias: IntArray, low: IntArray, high: IntArray) -> Bounds:
    """Interval arithmetic for ``x @ weight + bias`` with ``low <= x <= high`` elementwise."""
    positive = np.maximum(weight, 0)
    negative = np.minimum(weight, 0)
    out_low: IntArray = low @ positive + high @ negative + bias
    out_high: IntArray = high @ positive + low @ negative + bias
    return out_low, out_high


@dataclass(frozen=True, eq=False)
class Dense:
    """``x @ weight + bias`` on a flat (N, features) tensor; ``weight`` is (in, out)."""

    weight: IntArray
    bias: IntArray
    bits: int = 0
    """Accumulator width in bits (signed), set by ``with_bits`` from the worst-case bounds."""

    def __call__(self, x: Tensor, ops: Ops) -> Tensor:
        return ops.hint(x @ self.weight + self.bias, self.bits)

    def bounds(self, low: IntArray, high: IntArray) -> Bounds:
        if low.ndim != 1 or low.shape[0] != self.weight.shape[0]:
            raise ValueError(f"Dense expects {self.weight.shape[0]} input features")
        return _affine_bounds(self.weight, self.bias, low, high)

    def with_bits(self, low: IntArray, high: IntArray) -> Dense:
        out_low, out_high = self.bounds(low, high)
        return Dense(self.weight, self.bias, signed_bits(int(out_low.min()), int(out_high.max())))


@dataclass(frozen=True, eq=False)
class Conv:
    """Valid convolution with integer ``weight`` (out, in, kh, kw), ``bias`` and ``stride``."""

    weight: IntArray
    bias: IntArray
    stride: int = 1
    bits: int = 0

    def __call__(self, x: Tensor, ops: Ops) -> Tensor:
        out = ops.conv2d(x, self.weight, self.stride) + _channel_shape(self.bias, 4)
        return ops.hint(out, self.bits)

    def bounds(self, low: IntArray, high: IntArray) -> Bounds:
        """Per-output-channel bounds from per-input-channel bounds."""
        flat = self.weight.reshape(self.weight.shape[0], self.weight.shape[1], -1)
        positive = np.maximum(flat, 0).sum(axis=2).T  # (in, out)
        negative = np.minimum(flat, 0).sum(axis=2).T
        out_low: IntArray = low @ positive + high @ negative + self.bias
        out_high: IntArray = high @ positive + low @ negative + self.bias
        return out_low, out_high

    def with_bits(self, low: IntArray, high: IntArray) -> Conv:
        out_low, out_high = self.bounds(low, high)
        bits = signed_bits(int(out_low.min()), int(out_high.max()))
        return Conv(self.weight, self.bias, self.stride, bits)


@dataclass(frozen=True, eq=False)
class SumPool:
    """Non-overlapping ``size``×``size`` sums (average pooling with the 1/size² left to the
    next layer's scale); rows and columns that do not fill a window are dropped, as PyTorch
    does."""

    size: int
    bits: int = 0

    def __call__(self, x: Tensor, ops: Ops) -> Tensor:
        n, c, h, w = x.shape
        k = self.size
        rows, cols = h // k, w // k
        if rows * k != h or cols * k != w:
            x = x[:, :, : rows * k, : cols * k]
        pooled = np.sum(x.reshape((n, c, rows, k, cols, k)), axis=(3, 5))
        return ops.hint(pooled, self.bits)

    def bounds(self, low: IntArray, high: IntArray) -> Bounds:
        area = self.size * self.size
        return low * area, high * area

    def with_bits(self, low: IntArray, high: IntArray) -> SumPool:
        out_low, out_high = self.bounds(low, high)
        return SumPool(self.size, signed_bits(int(out_low.min()), int(out_high.max())))


@dataclass(frozen=True, eq=False)
class Flatten:
    """(N, C, H, W) → (N, C·H·W) in PyTorch's (channel-major) order."""

    spatial: int = 1
    """H·W of the input, so per-channel bounds can be repeated per feature."""

    def __call__(self, x: Tensor, ops: Ops) -> Tensor:
        return x.reshape((x.shape[0], int(np.prod(x.shape[1:]))))

    def bounds(self, low: IntArray, high: IntArray) -> Bounds:
        return np.repeat(low, self.spatial), np.repeat(high, self.spatial)


@dataclass(frozen=True, eq=False)
class Group:
    """Channels of a ``Lookup`` that share one accumulator width and rounding."""

    channels: IntArray
    bits: int
    lsbs: int


@dataclass(frozen=True, eq=False)
class Lookup:
    """Round each channel's accumulator to its own ``lsbs`` fewer bits, then one table per
    channel.

    The table does ReLU and requantisation together (any elementwise function would do):
    channel c maps the rounded value r to ``tables[c, r // 2**lsbs[c] - low[c]]``, clamped to
    the table's ends. Channel c's rounded value has ``bits[c]`` bits, so its lookup reads
    ``bits[c] - lsbs[c]`` bits; keeping that at most 8 is what makes the bootstrap affordable.
    Rounding per channel lets each table span its own channel's range rather than the widest
    one's; channels with equal (bits, lsbs) are rounded and looked up together (``groups``),
    so the circuit has one slice per distinct width, not one per channel.
    """

    lsbs: IntArray
    """(channels,) bits removed by exact rounding before the table."""
    low: IntArray
    """(channels,) entry 0 of channel c's table stands for the rounded value low[c]·2**lsbs[c]."""
    tables: IntArray
    """(channels, entries) table values."""
    bits: IntArray
    """(channels,) signed width of the accumulator and of its rounded value."""

    def __post_init__(self) -> None:
        channels = self.tables.shape[0]
        for name in ("lsbs", "low", "bits"):
            if getattr(self, name).shape != (channels,):
                raise ValueError(f"Lookup.{name} must have one entry per table ({channels})")

    @property
    def lookup_bits(self) -> int:
        """The widest table input, in bits."""
        return int((self.bits - self.lsbs).max())

    @property
    def groups(self) -> list[Group]:
        keys = sorted({(int(b), int(s)) for b, s in zip(self.bits, self.lsbs, strict=True)})
        return [
            Group(int_array(np.flatnonzero((self.bits == b) & (self.lsbs == s))), b, s)
            for b, s in keys
        ]

    def activate(self, rounded: IntArray, channels: IntArray) -> IntArray:
        """The table lookup of ``channels`` on their rounded accumulators (N, len(channels)[,
        H, W])."""
        entries = self.tables.shape[1]
        shape = (1, len(channels)) + (1,) * (rounded.ndim - 2)
        lsbs = self.lsbs[channels].reshape(shape)
        index = np.clip((rounded >> lsbs) - self.low[channels].reshape(shape), 0, entries - 1)
        out: IntArray = self.tables[channels.reshape(shape), index]
        return out

    def _group(self, x: Tensor, ops: Ops, group: Group) -> Tensor:
        rounded = ops.hint(ops.round(ops.hint(x, group.bits), group.lsbs), group.bits)

        def table(values: IntArray) -> IntArray:  # concrete names the lookup after it
            return self.activate(values, group.channels)

        return ops.lookup(rounded, table)

    def __call__(self, x: Tensor, ops: Ops) -> Tensor:
        groups = self.groups
        if len(groups) == 1:
            return self._group(x, ops, groups[0])
        parts = tuple(self._group(x[:, group.channels], ops, group) for group in groups)
        order = np.concatenate([group.channels for group in groups])
        return np.concatenate(parts, axis=1)[:, np.argsort(order)]

    def bounds(self, low: IntArray, high: IntArray) -> Bounds:
        return self.tables.min(axis=1), self.tables.max(axis=1)


Layer = Dense | Conv | SumPool | Flatten | Lookup


def int_array(values: npt.ArrayLike) -> IntArray:
    """``values`` as a C-contiguous int64 array."""
    return np.ascontiguousarray(values, dtype=np.int64)
