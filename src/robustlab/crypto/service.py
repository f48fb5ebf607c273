"""The cloud of the thesis's Figure 3.1 as an HTTP service: it holds the compiled circuit and,
per client, the evaluation keys the client uploaded, and computes on images it cannot read.

    GET  /health                    status and circuit id (no token needed)
    GET  /client                    the client bundle: specs and input format (JSON)
    POST /keys                      body: enveloped evaluation keys → {"client": id}
    POST /clients/{id}/classify     body: an enveloped encrypted image → enveloped logits

Every bad request gets a 4xx with a message that says what was wrong, and the server keeps
serving: no or a wrong token 401, malformed or corrupted bytes (any header field of the wrong
type included) 400, unknown client 404, a body too slow 408, another circuit or key set 409,
a body too large 413, no upload slot or no room for another key set 503. Tokens are checked
before a body is read (``auth``), bodies are capped, timed and spooled to disk (``uploads``),
connections that stall are closed (``connection``), key sets are bounded per token
(``keystore``); every number is in ``limits``.

(No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run
time, and ``Request`` is only imported when the app is created.)
"""

import base64
import importlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustlab.crypto.auth import TokenSet, check_exposure
from robustlab.crypto.connection import guarded_protocol
from robustlab.crypto.errors import (
    CapacityError,
    EnvelopeError,
    MismatchError,
    MissingBackendError,
    QuotaError,
    UnknownClientError,
)
from robustlab.crypto.limits import Limits, MiB, Quotas
from robustlab.crypto.protocol import FheServer
from robustlab.crypto.uploads import (
    BodyError,
    BodyTimeout,
    UploadSlots,
    check_declared,
    receive_body,
)

__all__ = ["BackgroundService", "Limits", "MiB", "Quotas", "Service", "create_app", "serve"]

SERVICE_HINT = "install the fhe extra: pip install 'robustlab[fhe]' (fastapi, uvicorn, httpx)"
OWNER = "robustlab.owner"
"""The ASGI scope key under which the gate leaves the request's owner (None: no token)."""
OPEN_PATHS = frozenset({"/health"})
RETRY_AFTER_S = 30


def _require(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise MissingBackendError(f"{name} is not importable ({error}); {SERVICE_HINT}") from None


@dataclass
class Service:
    """The ASGI application with what the server around it must know: limits and tokens."""

    asgi: Any
    limits: Limits
    tokens: TokenSet = field(default_factory=TokenSet)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.asgi(scope, receive, send)


def _header(scope: dict[str, Any], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]


def _closes(scope: dict[str, Any], drain: int) -> bool:
    """Whether an answer given before the body is read closes the connection, rather than
    letting the connection guard drain the body: when it declares more than ``drain`` bytes.
    (A chunked body is drained too; the guard stops at its own cap.)"""
    declared = _header(scope, b"content-length")
    return bool(declared) and declared[0].isdigit() and int(declared[0]) > drain


class _Http:
    """The two things a handler reads from a starlette ``Request`` (typed: it is Any here)."""

    def __init__(self, request: Any) -> None:
        self.declared: str | None = request.headers.get("content-length")
        self.receive: Any = request.receive


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str]) -> list[Any]:
    data = json.dumps(body).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(key.encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()]
    return [
        {"type": "http.response.start", "status": status, "headers": raw},
        {"type": "http.response.body", "body": data},
    ]


def _gate(app: Any, tokens: TokenSet, limits: Limits) -> Any:
    """Refuse (401) every request without a valid token, before its body is read."""

    async def gated(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = _header(scope, b"authorization")
        if not tokens.enabled:
            owner = tokens.owner(None)
        else:  # two Authorization headers are as good as none
            owner = tokens.owner(headers[0]) if len(headers) == 1 else None
        if owner is None and scope.get("path") not in OPEN_PATHS:
            reply = {"www-authenticate": 'Bearer realm="robustlab-fhe"'}
            chunked = bool(_header(scope, b"transfer-encoding"))
            if chunked or _closes(scope, limits.stranger_drain_bytes):
                reply["connection"] = "close"  # a stranger's body of unknown size: not read
            what = "no token" if not headers else "an invalid token"
            detail = (
                f"this service needs a token and the request carried {what}: send "
                "`Authorization: Bearer TOKEN` (robustlab fhe query --token-file FILE)"
            )
            for message in _json_response(401, {"detail": detail}, reply):
                await send(message)
            return
        await app({**scope, OWNER: owner}, receive, send)

    return gated


def create_app(
    server: FheServer, limits: Limits | None = None, tokens: TokenSet | None = None
) -> Service:
    """The service for ``server``: FastAPI routes behind the token gate."""
    fastapi = _require("fastapi")
    responses = _require("fastapi.responses")
    concurrency = _require("starlette.concurrency")
    limits = limits or Limits()
    tokens = tokens or TokenSet()
    slots = UploadSlots(limits.max_uploads, limits.uploads_per_token)
    app = fastapi.FastAPI(
        title="robustlab encrypted inference", docs_url=None, redoc_url=None, openapi_url=None
    )
    Request = fastapi.Request

    def problem(status: int, message: str, request: Any = None, close: bool = False) -> Any:
        headers = {"connection": "close"} if close else {}
        if request is not None and _closes(request.scope, limits.drain_bytes):
            headers["connection"] = "close"
        if status == 503:
            headers["retry-after"] = str(RETRY_AFTER_S)
        return responses.JSONResponse({"detail": message}, status_code=status, headers=headers)

    async def guarded(request: Any, call: Any) -> Any:
        try:
            return await call()
        except BodyError as error:  # answered before the body was all read
            return problem(error.status, str(error), request, isinstance(error, BodyTimeout))
        except UnknownClientError as error:
            return problem(404, str(error))
        except (EnvelopeError, MismatchError) as error:
            return problem(409 if isinstance(error, MismatchError) else 400, str(error))
        except QuotaError as error:
            return problem(413, str(error))
        except CapacityError as error:
            return problem(503, str(error))

    async def unexpected(request: Any, error: Exception) -> Any:
        # A bug, not the client's doing: no traceback to the client, and a clean close.
        return problem(500, "internal error; the server's log has the details", close=True)

    def owner_of(request: Any) -> Any:
        return request.scope.get(OWNER)

    def health(request: Request) -> dict[str, Any]:  # type: ignore[valid-type]
        answer: dict[str, Any] = {"status": "ok", "circuit": server.circuit}
        owner = owner_of(request)
        if owner is not None:
            answer["key_sets"] = len(server.keys.clients(owner))
        return answer

    def client_bundle() -> dict[str, Any]:
        return {
            "manifest": server.bundle.manifest,
            "specs": base64.b64encode(server.bundle.specs).decode("ascii"),
        }

    async def upload_keys(request: Request) -> Any:  # type: ignore[valid-type]
        owner, http = owner_of(request), _Http(request)

        async def call() -> Any:
            what = "evaluation keys"
            check_declared(http.declared, limits.max_key_bytes, what)
            if not slots.claim(owner):
                return problem(
                    503,
                    f"{slots.in_use} key uploads are under way (at most {slots.total}, "
                    f"{slots.per_owner} per token); try again shortly",
                    request,
                )
            try:
                body = await receive_body(http.receive, limits.max_key_bytes, limits, what)
                try:
                    client = await concurrency.run_in_threadpool(
                        server.register_file, body.file, body.size, owner
                    )
                finally:
                    body.close()
            finally:
                slots.release(owner)
            return {"client": client}

        return await guarded(request, call)

    async def classify(client: str, request: Request) -> Any:  # type: ignore[valid-type]
        owner, http = owner_of(request), _Http(request)

        async def call() -> Any:
            if not server.has_client(client, owner):
                return problem(
                    404,
                    f"unknown client {client[:12]}: upload evaluation keys first (POST /keys)",
                    request,
                )
            what = "encrypted input"
            check_declared(http.declared, limits.max_input_bytes, what)
            body = await receive_body(http.receive, limits.max_input_bytes, limits, what)
            try:
                message = body.read()
            finally:
                body.close()
            answer = await concurrency.run_in_threadpool(server.evaluate, client, message, owner)
            return responses.Response(answer, media_type="application/octet-stream")

        return await guarded(request, call)

    app.add_exception_handler(Exception, unexpected)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/client", client_bundle, methods=["GET"])
    app.add_api_route("/keys", upload_keys, methods=["POST"])
    app.add_api_route("/clients/{client}/classify", classify, methods=["POST"])
    return Service(_gate(app, tokens, limits), limits, tokens)


def _config(
    service: Service,
    host: str,
    port: int,
    tls: tuple[Path, Path] | None = None,
    log_level: str = "warning",
) -> Any:
    """uvicorn's settings: the guarded h11 protocol and the connection cap from ``limits``."""
    uvicorn = _require("uvicorn")
    limits = service.limits
    return uvicorn.Config(
        service,
        host=host,
        port=port,
        interface="asgi3",
        http=guarded_protocol(limits.header_timeout, limits.body_timeout, limits.drain_bytes),
        limit_concurrency=limits.max_connections,
        lifespan="off",
        log_level=log_level,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )


class BackgroundService:
    """uvicorn serving an app from a thread, for tests and benchmarks over loopback."""

    def __init__(
        self,
        app: Service,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        check_exposure(host, app.tokens)
        uvicorn = _require("uvicorn")
        self._server = uvicorn.Server(_config(app, host, port, tls))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.host = host
        self.scheme = "https" if tls else "http"

    def start(self, timeout: float = 30.0) -> str:
        """Start serving; returns the base URL (with the port chosen by the OS for port 0)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the FHE service did not start")
            time.sleep(0.05)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"{self.scheme}://{self.host}:{port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


def serve(
    server: FheServer,
    host: str,
    port: int,
    limits: Limits | None = None,
    tokens: TokenSet | None = None,
    tls: tuple[Path, Path] | None = None,
) -> None:
    """Serve until interrupted (the ``robustlab fhe serve`` command); refuses to listen beyond
    loopback without tokens."""
    tokens = tokens or TokenSet()
    check_exposure(host, tokens)
    uvicorn = _require("uvicorn")
    uvicorn.Server(_config(create_app(server, limits, tokens), host, port, tls, "info")).run()
