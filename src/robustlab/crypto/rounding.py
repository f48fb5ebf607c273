"""The rounding the encrypted circuit performs, mirrored exactly in plain integers.

``concrete.fhe.round_bit_pattern(x, lsbs_to_remove=k)`` maps x to the nearest multiple of 2**k,
ties upward: ``(x + 2**(k-1)) // 2**k * 2**k`` with floor division, also for negative x. The
plain integer network must round the same way, or encrypted outputs could differ by one step.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


def round_lsbs(x: IntArray, lsbs: int) -> IntArray:
    """``x`` rounded to a multiple of ``2**lsbs``, halves up (an arithmetic shift is a floor)."""
    if lsbs < 0:
        raise ValueError(f"lsbs must be >= 0, got {lsbs}")
    if lsbs == 0:
        return x
    half = np.int64(1) << np.int64(lsbs - 1)
    shift = np.int64(lsbs)
    rounded: IntArray = ((x + half) >> shift) << shift
    return rounded


def round_scalar(value: int, lsbs: int) -> int:
    """``round_lsbs`` for one Python integer (used for bounds)."""
    if lsbs == 0:
        return value
    return ((value + (1 << (lsbs - 1))) >> lsbs) << lsbs


def signed_bits(low: int, high: int) -> int:
    """Smallest n such that every integer in [low, high] fits an n-bit two's complement value."""
    bits = 1
    while low < -(1 << (bits - 1)) or high > (1 << (bits - 1)) - 1:
        bits += 1
    return bits
