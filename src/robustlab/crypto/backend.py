"""The FHE backend: the integer network's own ``forward`` traced by concrete-python (TFHE).

Clear weights multiply encrypted integers for free (leveled operations); every table lookup is
a programmable bootstrap, preceded by concrete's exact rounding of the accumulator to the
table's width. Bit widths come from the network's hints (``fhe.hint``): worst-case bounds make
the circuit exact for every possible image; calibrated ranges make it exact for every image
``IntegerNetwork.checked_logits`` reports as in range, not only for those in the input set.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from robustlab.crypto.errors import MissingBackendError
from robustlab.crypto.layers import Tensor
from robustlab.crypto.network import IntegerNetwork
from robustlab.crypto.rounding import IntArray

Rounding = Literal["exact", "approximate"]
ROUNDINGS: tuple[Rounding, ...] = ("exact", "approximate")

INSTALL_HINT = (
    "install the fhe extra: pip install torch==2.13.0 'setuptools<81' && "
    "pip install 'robustlab[fhe]' (concrete-python 2.11)"
)


def require_concrete() -> ModuleType:
    """``concrete.fhe``, or a ``MissingBackendError`` that says how to install it."""
    try:
        return importlib.import_module("concrete.fhe")
    except ImportError as error:
        raise MissingBackendError(
            f"concrete-python is not importable ({error}); {INSTALL_HINT}"
        ) from None


class FheOps:
    """``layers.Ops`` for concrete-python tracers."""

    def __init__(self) -> None:
        self.fhe = require_concrete()

    def hint(self, x: Tensor, bits: int) -> Tensor:
        return self.fhe.hint(x, bit_width=bits) if bits > 0 else x

    def round(self, x: Tensor, lsbs: int) -> Tensor:
        return self.fhe.round_bit_pattern(x, lsbs_to_remove=lsbs) if lsbs > 0 else x

    def lookup(self, x: Tensor, function: Callable[[IntArray], IntArray]) -> Tensor:
        return self.fhe.univariate(function)(x)

    def conv2d(self, x: Tensor, weight: IntArray, stride: int) -> Tensor:
        return self.fhe.conv(x, weight, strides=(stride, stride))


@dataclass(frozen=True)
class CompileOptions:
    """How the circuit is compiled; the defaults favour small uploads and exact results."""

    compress_keys: bool = True
    """Seeded evaluation keys: far smaller to store and upload, expanded by the server."""
    compress_inputs: bool = True
    """Seeded input ciphertexts: about half the upload per image."""
    global_p_error: float | None = None
    """Probability of any bootstrap in one run being off; None keeps concrete's default."""
    simulation: bool = False
    """Compile for ``simulate()`` only (no keys, fast): for large networks in tests."""
    rounding: Rounding = "exact"
    """``"exact"``: one bootstrap per removed bit, and the decrypted logits equal the plain
    integer network's. ``"approximate"``: one bootstrap per table whatever the accumulator's
    width (4x faster at 784-48-10), but accumulators near a rounding boundary may land on the
    neighbouring table entry, so the logits are no longer the plain network's; only
    ``simulated_logits`` (concrete's simulation models the error) tells its accuracy."""

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")

    @property
    def exact(self) -> bool:
        return self.rounding == "exact"

    def configuration(self, fhe: ModuleType) -> Any:
        exactness = fhe.Exactness.EXACT if self.exact else fhe.Exactness.APPROXIMATE
        return fhe.Configuration(
            compress_evaluation_keys=self.compress_keys,
            compress_input_ciphertexts=self.compress_inputs,
            global_p_error=self.global_p_error,
            fhe_simulation=self.simulation,
            fhe_execution=not self.simulation,
            rounding_exactness=exactness,
            show_progress=False,
        )


def compile_network(
    network: IntegerNetwork,
    inputset: IntArray,
    options: CompileOptions | None = None,
) -> Any:
    """A ``concrete.fhe.Circuit`` computing ``network.forward`` on one encrypted image.

    ``inputset`` holds integer images (N, C, H, W), e.g. quantised training images: concrete
    evaluates the function on them to check it traces; bit widths come from the hints.
    """
    fhe = require_concrete()
    options = options or CompileOptions()
    ops = FheOps()

    def classify(x: Any) -> Any:
        return network.forward(x, ops)

    samples = [np.asarray(image[None], dtype=np.int64) for image in inputset]
    compiler = fhe.Compiler(classify, {"x": "encrypted"})
    return compiler.compile(samples, options.configuration(fhe))


def simulated_logits(
    network: IntegerNetwork,
    inputset: IntArray,
    inputs: IntArray,
    rounding: Rounding = "exact",
) -> IntArray:
    """What the encrypted circuit would decrypt to for each integer image in ``inputs``,
    from concrete's simulation (no keys, milliseconds per image).

    With exact rounding this is the plain network's output; with approximate rounding it
    draws the rounding errors the way the encrypted circuit makes them, so it is how that
    circuit's accuracy is measured on a whole test set.
    """
    circuit = compile_network(network, inputset, CompileOptions(simulation=True, rounding=rounding))
    rows = [np.ravel(circuit.simulate(np.asarray(image[None], dtype=np.int64))) for image in inputs]
    return np.stack(rows).astype(np.int64) if rows else np.zeros((0, network.classes), np.int64)
