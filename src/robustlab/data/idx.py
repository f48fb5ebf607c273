"""A parser for the IDX format MNIST and Fashion-MNIST ship in.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the values in big-endian row-major order. The header must account for every
payload byte, so a truncated or padded file is caught here rather than as a wrong shape later.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import numpy.typing as npt

from robustlab.errors import DatasetError

IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def parse_idx(data: bytes | bytearray, source: str) -> npt.NDArray[np.generic]:
    """Decode IDX bytes into an array in native byte order; ``source`` names the file in errors.

    The array shares memory with ``data`` when no byte swap is needed (always for uint8).
    """

    def bad(problem: str) -> DatasetError:
        return DatasetError(f"{source}: not a valid IDX file: {problem}")

    if len(data) < 4:
        raise bad(f"only {len(data)} bytes, shorter than the 4-byte magic number")
    zero_a, zero_b, type_code, ndims = data[0], data[1], data[2], data[3]
    if zero_a or zero_b:
        magic = int.from_bytes(data[:4], "big")
        raise bad(f"magic number 0x{magic:08x} does not start with two zero bytes")
    if type_code not in IDX_TYPES:
        known = ", ".join(f"0x{code:02x}" for code in IDX_TYPES)
        raise bad(f"unknown data type code 0x{type_code:02x} (known: {known})")
    if ndims == 0:
        raise bad("the header declares zero dimensions")
    header_size = 4 + 4 * ndims
    if len(data) < header_size:
        raise bad(f"the file ends inside the header ({len(data)} of {header_size} bytes)")
    dims = struct.unpack_from(f">{ndims}I", data, 4)
    dtype = np.dtype(IDX_TYPES[type_code])
    count = math.prod(dims)
    expected = count * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        shape = "×".join(str(dim) for dim in dims)
        problem = "truncated" if actual < expected else "trailing bytes after the data"
        raise bad(
            f"{problem}: the header declares {shape} values of {dtype.name} "
            f"({expected} bytes) but the file holds {actual} bytes after the header"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_size).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)
