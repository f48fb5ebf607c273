"""What one request and one client may cost the FHE service, every number settable from
``robustlab fhe serve``.

``Limits`` bounds requests: body sizes, how long a sender may take over its headers and its
body, how many key uploads run at once and how many connections are served. ``Quotas`` bounds
what stays: evaluation-key sets (hundreds of MiB each for a 784-input circuit) in all and per
token. Without both, a few idle connections or a few uploads could take the server's memory,
disk or connections from everyone else.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from robustlab.errors import ConfigError

MiB = 1 << 20


def _positive(owner: object) -> None:
    for field in fields(owner):  # type: ignore[arg-type]
        value = getattr(owner, field.name)
        if isinstance(value, (int, float)) and not value > 0:
            raise ConfigError(f"{field.name.replace('_', '-')} must be > 0, got {value}")


@dataclass(frozen=True)
class Limits:
    """Per request: sizes, timeouts and concurrency."""

    max_key_bytes: int = 1024 * MiB
    """One evaluation-key upload (107 MiB compressed for 784→48→10, 322 MiB at W4 A4 I3 L6)."""
    max_input_bytes: int = 16 * MiB
    """One encrypted image (19 KB for 784 two-bit pixels with compressed inputs)."""
    body_timeout: float = 30.0
    """Seconds a body may go without a byte arriving before its sender is dropped (408)."""
    body_deadline: float = 600.0
    """Seconds a whole body may take, however steadily it trickles in (408)."""
    header_timeout: float = 10.0
    """Seconds from connecting (or from a new request's first byte) to its last header."""
    max_uploads: int = 2
    """Key uploads received at once, all tokens together; each is spooled to disk."""
    uploads_per_token: int = 1
    """Key uploads one token may have under way at once (so one token cannot take all)."""
    max_connections: int = 64
    """Connections (and requests) served at once; beyond, new requests get 503."""
    drain_bytes: int = 512 * MiB
    """After an early answer (404, 413, 503, ...) to a request with a token, at most this much
    of the rest of its body is read and dropped, so a client still sending sees the answer
    rather than a reset; a larger declared body gets the answer and a closed connection."""
    stranger_drain_bytes: int = 1 * MiB
    """The same for requests without a valid token (401): a stranger's body is not worth more."""
    spool_memory: int = 1 * MiB
    """Bodies up to this size stay in memory; larger ones go to a temporary file."""
    spool_dir: Path | None = None
    """Where bodies are spooled (default: the system's temporary directory)."""

    def __post_init__(self) -> None:
        _positive(self)
        if self.uploads_per_token > self.max_uploads:
            raise ConfigError(
                f"uploads-per-token ({self.uploads_per_token}) must be <= max-uploads "
                f"({self.max_uploads})"
            )
        if self.spool_dir is not None and not Path(self.spool_dir).is_dir():
            raise ConfigError(f"spool-dir {self.spool_dir} is not a directory")


@dataclass(frozen=True)
class Quotas:
    """What stays on the server: evaluation-key sets, in all and per token."""

    max_clients: int = 8
    """Key sets held in all; when full, an upload is refused (503), never another's evicted."""
    max_memory: int = 8192 * MiB
    """Their memory in all (each counted at the circuit's expanded key size)."""
    token_key_sets: int = 2
    """Key sets one token may hold; its next upload evicts its own least recently used."""
    token_memory: int = 2048 * MiB
    """Memory one token's key sets may take; beyond, its own least recently used go."""
    idle_ttl: float = 3600.0
    """Seconds a key set may go unused before it is dropped (its client uploads again)."""

    def __post_init__(self) -> None:
        _positive(self)
