"""A connection guard for uvicorn: no connection is held by a sender that stops sending.

uvicorn closes a kept-alive connection that goes quiet between requests, but not one that
connects and never finishes its request line and headers (a single byte also switches its
keep-alive timer off), nor one whose body keeps coming after the application has answered
(a 401, 404, 413 or 503 given before the body was read). ``guarded_protocol`` returns
uvicorn's h11 protocol with two more timers: the headers must be complete within
``header_timeout`` of the connection or of the request's first byte (else 408 and close),
and after an early answer the rest of the body is read and dropped — so that the client,
still sending, sees the answer rather than a reset — as long as it keeps arriving (a pause
of ``drain_timeout`` closes) and up to ``drain_bytes``; then the connection closes. (The
application closes at once instead when the declared body is larger than it will drain.)
A connection left idle with no keep-alive timer of uvicorn's gets one of its own.

Body timeouts while the application reads a body are ``uploads.receive_body``'s.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

TIMEOUT_TEXT = b"the request line and headers did not arrive in time\n"
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(TIMEOUT_TEXT), TIMEOUT_TEXT)
)


def guarded_protocol(header_timeout: float, drain_timeout: float, drain_bytes: int) -> Any:
    """A subclass of uvicorn's ``H11Protocol`` with header and drain timers (for ``http=``)."""
    h11 = importlib.import_module("h11")
    base = importlib.import_module("uvicorn.protocols.http.h11_impl").H11Protocol

    class GuardedH11Protocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._guard: asyncio.TimerHandle | None = None
            self._guarding = ""
            self._seen_request = False
            self._drained = 0
            self._arm("headers", header_timeout)

        def data_received(self, data: bytes) -> None:
            if self._guarding == "drain":
                self._drained += len(data)
                if self._drained > drain_bytes:
                    self._close()
                    return
                self._arm("drain", drain_timeout, restart=True)  # idle time, not a deadline
            super().data_received(data)
            self._update()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._update()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _update(self) -> None:
            """Which timer this connection's state calls for now."""
            theirs, ours = self.conn.their_state, self.conn.our_state
            if theirs is h11.IDLE:
                pending = bool(self.conn.trailing_data[0]) or not self._seen_request
                if pending:
                    self._arm("headers", header_timeout)
                elif self.timeout_keep_alive_task is None:  # e.g. after a drained body
                    self._arm("idle", self.timeout_keep_alive)
                else:
                    self._disarm()  # between requests: uvicorn's keep-alive timer
            elif theirs is h11.SEND_BODY and ours in (h11.DONE, h11.MUST_CLOSE):
                self._arm("drain", drain_timeout)
            else:
                self._disarm()  # a request under way: its body's timeouts are the app's
            if theirs is not h11.IDLE:
                self._seen_request = True

        def _arm(self, what: str, seconds: float, restart: bool = False) -> None:
            if self._guarding == what and not restart:
                return  # the headers' time is a deadline: later bytes do not push it back
            drained = self._drained if self._guarding == what else 0
            self._disarm()
            self._guarding, self._drained = what, drained
            self._guard = self.loop.call_later(seconds, self._expired, what)

        def _disarm(self) -> None:
            if self._guard is not None:
                self._guard.cancel()
            self._guard, self._guarding = None, ""

        def _expired(self, what: str) -> None:
            self._guard, self._guarding = None, ""
            if self.transport.is_closing():
                return
            if what == "headers" and self.conn.our_state is h11.IDLE:
                self.transport.write(TIMEOUT_RESPONSE)
            self._close()

        def _close(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol
