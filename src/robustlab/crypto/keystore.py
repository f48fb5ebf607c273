"""The evaluation-key sets a server holds, filed by owner (the token that uploaded them).

Key sets are large, so they are bounded in all and per owner (``Quotas``). The eviction
policy is what keeps one client from denying another: an upload may only ever push out key
sets of its *own* owner, least recently used first. When the server is full of other owners'
key sets, the upload is refused (``CapacityError``) and nothing is evicted. Besides that, a
key set unused for ``idle_ttl`` seconds expires: its own idleness, not anyone's request, ends it.

Two owners uploading the same key bytes get two entries: a client id is only meaningful
together with the token that uploaded it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from robustlab.crypto.errors import CapacityError, QuotaError
from robustlab.crypto.limits import MiB, Quotas


@dataclass
class KeySet:
    owner: str
    client: str
    keys: Any
    charge: int
    """Bytes counted against the quotas: the circuit's expanded key size or the upload's."""
    last_used: float


def _mib(size: int) -> str:
    return f"{size / MiB:.0f} MiB"


class KeyStore:
    """Thread-safe: uploads register from worker threads while evaluations read."""

    def __init__(self, quotas: Quotas, clock: Callable[[], float] = time.monotonic) -> None:
        self.quotas = quotas
        self._clock = clock
        self._sets: dict[tuple[str, str], KeySet] = {}
        self._lock = threading.Lock()

    def add(self, owner: str, client: str, keys: Any, charge: int) -> list[str]:
        """File ``keys`` under ``owner``; returns the ids of ``owner``'s own key sets it evicted.

        Raises ``QuotaError`` when one key set is more than an owner may hold, and
        ``CapacityError`` when other owners' key sets fill the server.
        """
        quotas = self.quotas
        limit = min(quotas.token_memory, quotas.max_memory)
        if charge > limit:
            raise QuotaError(
                f"one key set of this circuit takes {_mib(charge)}, more than a token may hold "
                f"({_mib(limit)}); the operator must raise --token-memory / --max-memory"
            )
        with self._lock:
            now = self._clock()
            self._expire(now)
            own = sorted(  # the same keys again replace their entry: not counted twice
                (e for e in self._sets.values() if e.owner == owner and e.client != client),
                key=lambda entry: entry.last_used,
            )
            others = [entry for entry in self._sets.values() if entry.owner != owner]
            other_count, other_memory = len(others), sum(entry.charge for entry in others)
            dropped = 0
            while dropped <= len(own):
                kept = own[dropped:]
                count, memory = len(kept) + 1, sum(entry.charge for entry in kept) + charge
                if (
                    count <= quotas.token_key_sets
                    and memory <= quotas.token_memory
                    and count + other_count <= quotas.max_clients
                    and memory + other_memory <= quotas.max_memory
                ):
                    break
                dropped += 1
            else:
                raise CapacityError(
                    f"the server holds its maximum of key sets from other clients "
                    f"({other_count} of {quotas.max_clients}, {_mib(other_memory)} of "
                    f"{_mib(quotas.max_memory)}); none of theirs is evicted for yours: try again "
                    f"later (unused key sets expire after {quotas.idle_ttl:.0f} s)"
                )
            for entry in own[:dropped]:
                del self._sets[(owner, entry.client)]
            self._sets.pop((owner, client), None)
            self._sets[(owner, client)] = KeySet(owner, client, keys, charge, now)
            return [entry.client for entry in own[:dropped]]

    def get(self, owner: str, client: str) -> Any | None:
        """``owner``'s keys for ``client`` (and marks them used), or None."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._sets.get((owner, client))
            if entry is None:
                return None
            entry.last_used = now
            return entry.keys

    def has(self, owner: str, client: str) -> bool:
        with self._lock:
            self._expire(self._clock())
            return (owner, client) in self._sets

    def clients(self, owner: str | None = None) -> list[str]:
        """Client ids held, of ``owner`` or of everyone."""
        with self._lock:
            self._expire(self._clock())
            return [e.client for e in self._sets.values() if owner in (None, e.owner)]

    def memory(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return sum(entry.charge for entry in self._sets.values())

    def _expire(self, now: float) -> None:
        stale = [k for k, e in self._sets.items() if now - e.last_used > self.quotas.idle_ttl]
        for key in stale:
            del self._sets[key]
