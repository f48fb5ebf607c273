"""The cloud of the thesis's Figure 3.1 as an HTTP service: it holds the compiled circuit and,
per client, the evaluation keys the client uploaded, and computes on images it cannot read.

    GET  /health                    circuit id, number of clients
    GET  /client                    the client bundle: specs and input format (JSON)
    POST /keys                      body: enveloped evaluation keys → {"client": id}
    POST /clients/{id}/classify     body: an enveloped encrypted image → enveloped logits

Every bad request gets a 4xx with a message that says what was wrong (unknown client 404,
body too large 413, malformed or corrupted bytes 400, another circuit or key set 409); the
server keeps running. Bodies are read with a size cap before anything is parsed.

(No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run
time, and ``Request`` is only imported when the app is created.)
"""

import base64
import importlib
import threading
from dataclasses import dataclass
from typing import Any

from robustlab.crypto.errors import EnvelopeError, MismatchError, MissingBackendError
from robustlab.crypto.protocol import FheServer

MiB = 1 << 20
SERVICE_HINT = "install the fhe extra: pip install 'robustlab[fhe]' (fastapi, uvicorn, httpx)"


@dataclass(frozen=True)
class Limits:
    max_key_bytes: int = 2048 * MiB
    """Evaluation keys are large (hundreds of MiB uncompressed for a 784-input circuit)."""
    max_input_bytes: int = 64 * MiB
    """One encrypted image is well under a MiB with compressed inputs."""


def _require(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise MissingBackendError(f"{name} is not importable ({error}); {SERVICE_HINT}") from None


class BodyTooLarge(Exception):
    pass


def create_app(server: FheServer, limits: Limits | None = None) -> Any:
    """A FastAPI application serving ``server``."""
    fastapi = _require("fastapi")
    responses = _require("fastapi.responses")
    concurrency = _require("starlette.concurrency")
    limits = limits or Limits()
    app = fastapi.FastAPI(title="robustlab encrypted inference", docs_url=None, redoc_url=None)
    Request = fastapi.Request

    def problem(status: int, message: str) -> Any:
        return responses.JSONResponse({"detail": message}, status_code=status)

    async def read_body(request: Any, limit: int, what: str) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"{what} of {int(declared)} bytes exceeds the limit of {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"{what} exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def guarded(call: Any) -> Any:
        try:
            return await call()
        except BodyTooLarge as error:
            return problem(413, str(error))
        except EnvelopeError as error:
            return problem(400, str(error))
        except MismatchError as error:
            return problem(409, str(error))

    def health() -> dict[str, Any]:
        return {"status": "ok", "circuit": server.circuit, "clients": len(server.clients)}

    def client_bundle() -> dict[str, Any]:
        return {
            "manifest": server.bundle.manifest,
            "specs": base64.b64encode(server.bundle.specs).decode("ascii"),
        }

    async def upload_keys(request: Request) -> Any:  # type: ignore[valid-type]
        async def call() -> Any:
            body = await read_body(request, limits.max_key_bytes, "evaluation keys")
            client = await concurrency.run_in_threadpool(server.register, body)
            return {"client": client}

        return await guarded(call)

    async def classify(client: str, request: Request) -> Any:  # type: ignore[valid-type]
        async def call() -> Any:
            if not server.has_client(client):
                return problem(
                    404,
                    f"unknown client {client[:12]}: upload evaluation keys first (POST /keys)",
                )
            body = await read_body(request, limits.max_input_bytes, "encrypted input")
            answer = await concurrency.run_in_threadpool(server.evaluate, client, body)
            return responses.Response(answer, media_type="application/octet-stream")

        return await guarded(call)

    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/client", client_bundle, methods=["GET"])
    app.add_api_route("/keys", upload_keys, methods=["POST"])
    app.add_api_route("/clients/{client}/classify", classify, methods=["POST"])
    return app


class BackgroundService:
    """uvicorn serving an app from a thread, for tests and benchmarks over loopback."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        uvicorn = _require("uvicorn")
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.host = host

    def start(self, timeout: float = 30.0) -> str:
        """Start serving; returns the base URL (with the port chosen by the OS for port 0)."""
        import time

        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the FHE service did not start")
            time.sleep(0.05)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


def serve(server: FheServer, host: str, port: int, limits: Limits | None = None) -> None:
    """Serve until interrupted (the ``robustlab fhe serve`` command)."""
    uvicorn = _require("uvicorn")
    uvicorn.run(create_app(server, limits), host=host, port=port, log_level="info")
