"""Request bodies read the way a server must: capped, timed and spooled to disk.

Evaluation keys are hundreds of MiB. Collected as chunks and joined they cost twice that in
memory before a byte is parsed, and a sender that declares a large body and then stops would
hold its connection and buffers for ever. So a body streams into a temporary file (kept in
memory only up to ``Limits.spool_memory``; unnamed on disk, so nothing is left behind by a
crash), every chunk must arrive within ``body_timeout`` and the whole body within
``body_deadline``, and key uploads run in a few slots, at most ``uploads_per_token`` per token.

Works on the raw ASGI ``receive`` callable: the application decides what a refusal looks like.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

from robustlab.crypto.limits import Limits

Receive = Callable[[], Awaitable[dict[str, Any]]]


class BodyError(Exception):
    """A body the server will not take; ``status`` is the HTTP answer."""

    status = 400


class BodyTooLarge(BodyError):
    status = 413


class BodyTimeout(BodyError):
    status = 408


class BodyAborted(BodyError):
    """The client went away mid-body: nobody is left to answer."""


@dataclass
class Body:
    """A received body: ``size`` bytes in ``file`` (memory or an unnamed temporary file)."""

    file: IO[bytes]
    size: int

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    def close(self) -> None:
        self.file.close()


def check_declared(declared: str | None, limit: int, what: str) -> None:
    """Refuse a body whose ``Content-Length`` is over ``limit`` before reading any of it."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"{what} of {int(declared)} bytes exceeds the limit of {limit} bytes")


async def receive_body(receive: Receive, limit: int, limits: Limits, what: str) -> Body:
    """The request body from ``receive``, at most ``limit`` bytes, spooled as it arrives."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.body_deadline
    spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (returned open, closed by Body)
        max_size=limits.spool_memory,
        dir=None if limits.spool_dir is None else str(limits.spool_dir),
    )
    size = 0
    try:
        while True:
            wait = min(limits.body_timeout, deadline - loop.time())
            try:
                if wait <= 0:
                    raise asyncio.TimeoutError
                message = await asyncio.wait_for(receive(), wait)
            except asyncio.TimeoutError:
                if wait < limits.body_timeout:
                    raise BodyTimeout(
                        f"{what} took longer than {limits.body_deadline:g} s to arrive "
                        f"({size} bytes received); the connection is closed"
                    ) from None
                raise BodyTimeout(
                    f"{what}: nothing arrived for {limits.body_timeout:g} s "
                    f"({size} bytes received); the connection is closed"
                ) from None
            if message.get("type") == "http.disconnect":
                raise BodyAborted(f"the client disconnected while sending {what}")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"{what} exceeds the limit of {limit} bytes")
            spool.write(chunk)
            if not message.get("more_body", False):
                return Body(spool, size)
    except BaseException:
        spool.close()
        raise


class UploadSlots:
    """At most ``total`` uploads at once, ``per_owner`` of them for any one owner.

    Claimed and released on the event loop's thread only, so no lock is needed; a claim
    never waits: a refused upload is answered at once (503) rather than queued.
    """

    def __init__(self, total: int, per_owner: int) -> None:
        self.total, self.per_owner = total, per_owner
        self._held: Counter[str] = Counter()

    @property
    def in_use(self) -> int:
        return sum(self._held.values())

    def claim(self, owner: str) -> bool:
        if self.in_use >= self.total or self._held[owner] >= self.per_owner:
            return False
        self._held[owner] += 1
        return True

    def release(self, owner: str) -> None:
        self._held[owner] -= 1
        if self._held[owner] <= 0:
            del self._held[owner]
