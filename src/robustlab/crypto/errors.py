"""Errors of the encrypted-inference path, each a ``RobustlabError`` with advice in its message.

They tell apart what a person can fix: a missing optional dependency, an artifact that is not
what it claims to be, keys or ciphertexts made for another circuit or another key, bytes
damaged in transit, a service that may not start or be used as asked, and a server that is full.
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


class UnknownClientError(MismatchError):
    """No evaluation keys are held for this client id (and this token): upload them first."""


class AccessError(CryptoError):
    """Tokens are missing, unreadable or weak, the service would be reachable by anyone, or a
    request's token was refused."""


class CapacityError(CryptoError):
    """The server holds all the key sets it may; nothing of another client is evicted to make
    room, so the caller retries later."""


class QuotaError(CryptoError):
    """One key set alone exceeds what a single token may hold: it can never fit."""
