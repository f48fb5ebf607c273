"""Errors of the encrypted-inference path, each a ``RobustlabError`` with advice in its message.

They tell apart what a person can fix: a missing optional dependency, an artifact that is not
what it claims to be, keys or ciphertexts made for another circuit or another key, and bytes
damaged in transit.
"""

from __future__ import annotations

from robustlab.errors import RobustlabError


class CryptoError(RobustlabError):
    """Base class of the errors raised by ``robustlab.crypto``."""


class MissingBackendError(CryptoError):
    """concrete-python (or the service's FastAPI/uvicorn/httpx) is not installed."""


class UnsupportedModelError(CryptoError):
    """The model has a layer or shape the integer network cannot express."""


class ArtifactError(CryptoError):
    """A compiled artifact or integer-network file is missing, unreadable or inconsistent."""


class EnvelopeError(CryptoError):
    """Bytes that should be a key or ciphertext are malformed, truncated or corrupted."""


class MismatchError(CryptoError):
    """A key or ciphertext belongs to another circuit or another key set."""
