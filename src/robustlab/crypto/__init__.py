"""Encrypted inference (thesis Chapter 3): integer-only networks with lookup-table activations.

``quantize`` turns a trained model into an ``IntegerNetwork`` that runs in plain numpy integers;
``robustlab.crypto.fhe`` compiles that same integer function with concrete-python (TFHE), whose
programmable bootstrapping *is* the lookup table, so encrypted outputs equal the plain ones bit
for bit. The FHE parts import concrete-python only when used (the ``fhe`` extra).
"""

from robustlab.crypto.errors import (
    ArtifactError,
    CryptoError,
    EnvelopeError,
    MismatchError,
    MissingBackendError,
    UnsupportedModelError,
)
from robustlab.crypto.network import IntegerNetwork
from robustlab.crypto.quantize import QuantSpec, quantize

__all__ = [
    "ArtifactError",
    "CryptoError",
    "EnvelopeError",
    "IntegerNetwork",
    "MismatchError",
    "MissingBackendError",
    "QuantSpec",
    "UnsupportedModelError",
    "quantize",
]
