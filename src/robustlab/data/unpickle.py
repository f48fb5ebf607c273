"""A pickle loader for CIFAR batch files that cannot run code.

Unpickling calls whatever global a file names, so a doctored "CIFAR batch" could run
``os.system``. The canonical batches need only dicts, lists, bytes, ints (opcodes, no globals)
and numpy's array reconstruction; every other global is refused.
"""

from __future__ import annotations

import importlib
import io
import pickle
from functools import cache
from typing import Any

import numpy as np

from robustlab.errors import DatasetError


@cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2 moved the module; the canonical files name the old path
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # pragma: no cover - numpy 1.x
        multiarray = importlib.import_module("numpy.core.multiarray")
    reconstruct = multiarray._reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals().get((module, name))
        if allowed is None:
            raise DatasetError(
                f"{self._source}: refusing to unpickle it: it asks for {module}.{name}, but a "
                "CIFAR batch holds only numpy arrays, dicts, lists, bytes and ints, so this is "
                "not a canonical CIFAR batch (it may be malicious)"
            )
        return allowed


def restricted_loads(data: bytes, source: str) -> object:
    """Unpickle ``data`` (Python 2 strings come back as bytes); ``source`` names it in errors."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except DatasetError:
        raise
    except Exception as error:  # a damaged pickle can fail in many ways; all mean "corrupt"
        raise DatasetError(
            f"{source}: not a readable CIFAR batch ({type(error).__name__}: {error})"
        ) from None
