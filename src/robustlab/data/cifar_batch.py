"""Decoding one CIFAR python batch (a pickled dict) into checked numpy arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from robustlab.data.unpickle import restricted_loads
from robustlab.errors import DatasetError

ROW_SIZE = 3 * 32 * 32
"""Bytes per image: 1024 red, then 1024 green, then 1024 blue values (CHW order)."""


@dataclass(frozen=True)
class Batch:
    data: npt.NDArray[np.uint8]
    """N×3072 uint8 rows."""
    labels: npt.NDArray[np.int64]


def parse_batch(raw: bytes, source: str, *, label_key: bytes, num_classes: int) -> Batch:
    """Unpickle (restricted) and validate one batch; ``source`` names the file in errors."""

    def bad(problem: str) -> DatasetError:
        return DatasetError(f"{source}: not a valid CIFAR batch: {problem}")

    batch = restricted_loads(raw, source)
    if not isinstance(batch, dict):
        raise bad(f"expected a pickled dict, found {type(batch).__name__}")
    for key in (b"data", label_key):
        if key not in batch:
            keys = ", ".join(repr(k) for k in batch)
            raise bad(f"no {key!r} entry (entries: {keys})")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise bad(f"b'data' must be a uint8 numpy array, found {_describe(data)}")
    if data.ndim != 2 or data.shape[1] != ROW_SIZE:
        raise bad(f"b'data' must have shape N×{ROW_SIZE}, found {data.shape}")
    labels = _labels(batch[label_key], bad)
    if labels.shape != (data.shape[0],):
        raise bad(f"{data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise bad(f"labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    return Batch(data=data, labels=labels)


def _labels(value: object, bad: Callable[[str], DatasetError]) -> npt.NDArray[np.int64]:
    """Labels as int64; the canonical files hold a list of ints, numpy integer arrays also pass."""
    if isinstance(value, list):
        if not all(type(label) is int for label in value):
            raise bad("the labels must all be integers")
        return np.array(value, dtype=np.int64).reshape(len(value))
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu" and value.ndim == 1:
        return value.astype(np.int64)
    raise bad(f"the labels must be a list of ints, found {_describe(value)}")


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype}"
    return type(value).__name__
