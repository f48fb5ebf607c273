"""`robustlab fhe serve` and `fhe query`: the encrypted-inference service and its client.

Beside `cli/fhe.py` (compile, run, table) because the service's security options — tokens,
TLS, quotas, size limits and timeouts — are a surface of their own.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from robustlab.cli.console import console, errors, print_table
from robustlab.cli.fhe import (
    DATA_ROOT_HELP,
    fhe_app,
    first_test_images,
    format_mib,
    format_seconds,
    require_extra,
)
from robustlab.crypto.auth import client_token, is_loopback, load_tokens
from robustlab.crypto.backend import require_concrete
from robustlab.crypto.errors import MissingBackendError
from robustlab.crypto.limits import Limits, MiB, Quotas
from robustlab.errors import ConfigError


def _service_modules() -> None:
    from robustlab.crypto.service import SERVICE_HINT

    for name in ("fastapi", "uvicorn", "httpx"):
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise MissingBackendError(
                f"{name} is not importable ({error}); {SERVICE_HINT}"
            ) from None


@fhe_app.command("serve")
def serve_command(
    artifact: Path = typer.Argument(..., help="an artifact written by `robustlab fhe compile`"),
    host: str = typer.Option(
        "127.0.0.1", help="address to listen on; anything but loopback needs tokens"
    ),
    port: int = typer.Option(8000, help="port to listen on"),
    token_file: Optional[Path] = typer.Option(
        None,
        help="bearer tokens, one `NAME:TOKEN` (or `TOKEN`) per line; also read from "
        "$ROBUSTLAB_FHE_TOKENS. Without any, only loopback is served, to anyone on it",
    ),
    tls_cert: Optional[Path] = typer.Option(None, help="TLS certificate (PEM), with --tls-key"),
    tls_key: Optional[Path] = typer.Option(None, help="TLS private key (PEM)"),
    artifact_digest: Optional[str] = typer.Option(
        None, help="refuse to start unless the manifest's sha256 is this (from `fhe compile`)"
    ),
    max_clients: int = typer.Option(8, help="evaluation-key sets held, all tokens together"),
    max_key_memory: int = typer.Option(8192, help="MiB of key sets held, all tokens together"),
    token_key_sets: int = typer.Option(
        2, help="key sets one token may hold (its next upload evicts its own least recently used)"
    ),
    token_memory: int = typer.Option(2048, help="MiB of key sets one token may hold"),
    key_ttl: float = typer.Option(3600.0, help="seconds an unused key set is kept"),
    max_key_mib: float = typer.Option(1024.0, help="largest evaluation-key upload, MiB"),
    max_input_mib: float = typer.Option(16.0, help="largest encrypted input, MiB"),
    body_timeout: float = typer.Option(
        30.0, help="seconds a body may go without a byte before its sender is dropped"
    ),
    body_deadline: float = typer.Option(600.0, help="seconds a whole body may take"),
    header_timeout: float = typer.Option(10.0, help="seconds a request's headers may take"),
    max_uploads: int = typer.Option(2, help="key uploads received at once, all tokens"),
    uploads_per_token: int = typer.Option(1, help="key uploads at once per token"),
    max_connections: int = typer.Option(64, help="connections served at once; beyond: 503"),
    spool_dir: Optional[Path] = typer.Option(
        None, help="where uploads are spooled on disk (default: the system's temporary dir)"
    ),
) -> None:
    """Serve the compiled circuit over HTTP; clients upload evaluation keys, then images."""
    require_extra(require_concrete, _service_modules)
    from robustlab.crypto.auth import check_exposure
    from robustlab.crypto.protocol import FheServer
    from robustlab.crypto.service import serve

    tokens = load_tokens(token_file)
    check_exposure(host, tokens)  # before minutes of loading: refuse an open service at once
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together; give both or neither")
    limits = Limits(
        max_key_bytes=int(max_key_mib * MiB),
        max_input_bytes=int(max_input_mib * MiB),
        body_timeout=body_timeout,
        body_deadline=body_deadline,
        header_timeout=header_timeout,
        max_uploads=max_uploads,
        uploads_per_token=uploads_per_token,
        max_connections=max_connections,
        spool_dir=spool_dir,
    )
    quotas = Quotas(
        max_clients=max_clients,
        max_memory=max_key_memory * MiB,
        token_key_sets=token_key_sets,
        token_memory=token_memory * MiB,
        idle_ttl=key_ttl,
    )
    server = FheServer(artifact, quotas=quotas, expected_digest=artifact_digest)
    tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    scheme = "https" if tls else "http"
    who = f"{len(tokens.names)} token(s)" if tokens.enabled else "no tokens (anyone on loopback)"
    console.print(
        f"serving circuit {server.circuit[:12]} on {scheme}://{host}:{port} to {who}; "
        f"key sets: {max_clients} in all, {token_key_sets} per token "
        f"(~{format_mib(server.key_set_bytes)} each)"
    )
    if not is_loopback(host) and tls is None:
        errors.print(
            "warning: tokens and keys cross the network in clear; serve behind TLS "
            "(--tls-cert/--tls-key, or a TLS proxy in front)"
        )
    serve(server, host, port, limits, tokens, tls)


@fhe_app.command("query")
def query_command(
    url: str = typer.Argument("http://127.0.0.1:8000", help="the service's base URL"),
    n: int = typer.Option(5, "--n", help="first N test images to classify"),
    dataset: Optional[str] = typer.Option(None, help="dataset of the images (default: server's)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    token_file: Optional[Path] = typer.Option(
        None, help="the bearer token to send (default: $ROBUSTLAB_FHE_TOKEN)"
    ),
    ca_file: Optional[Path] = typer.Option(
        None, help="certificate authority (PEM) of an https:// service's certificate"
    ),
) -> None:
    """Generate keys, upload the evaluation keys once, classify encrypted test images."""
    require_extra(require_concrete, _service_modules)
    from robustlab.crypto.protocol import FheClient
    from robustlab.crypto.remote import RemoteService

    service = RemoteService(url, token=client_token(token_file), ca_file=ca_file)
    try:
        bundle = service.bundle()
        name = dataset or str(bundle.manifest.get("dataset") or "")
        images, labels = first_test_images({"dataset": name}, n, data_root)
        client = FheClient(bundle)
        started = time.perf_counter()
        client.keygen()
        keygen_s = time.perf_counter() - started
        started = time.perf_counter()
        client_id = service.upload_keys(client.evaluation_keys())
        upload_s = time.perf_counter() - started
        rows = []
        correct = 0
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            started = time.perf_counter()
            logits = client.decrypt(service.classify(client_id, client.encrypt(image.numpy())))
            seconds = time.perf_counter() - started
            predicted = int(np.argmax(logits))
            correct += predicted == int(label)
            rows.append([index, int(label), predicted, format_seconds(seconds)])
    finally:
        service.close()
    print_table(
        f"{url}: {correct}/{len(rows)} correct "
        f"(keygen {keygen_s:.1f}s, key upload {upload_s:.1f}s)",
        ["image", "label", "predicted", "round trip"],
        rows,
    )
