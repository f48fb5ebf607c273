"""A bounded load test of the FHE service on 127.0.0.1: does it answer everyone, correctly,
while being sent garbage, slow bodies and oversized uploads?

A small real circuit (the 8×8 digits, 64→8→10, the tests' network: 38 bootstraps, not the
784-input MNIST one) is compiled and served by ``robustlab fhe serve`` in its own process,
with tokens and short timeouts. 20 workers then send ``--requests`` requests (300) in a
shuffled mix: valid ones (health, client bundle, key uploads, and real encrypted
classifications whose decryptions are checked against the plain network) and bad ones (no or
a wrong token, garbage, envelope headers of the wrong JSON type, unknown clients, oversized
bodies, malformed HTTP, bit-flipped copies of a client's keys from another token, uploads
that declare 200 MiB and stall, headers that never end). Each kind of request has the
answers it may get (e.g. 408 or 503 for a stalled upload); any other answer is counted as
unexpected, and a reset or a timeout as dropped.

A full encrypted classification takes ~1.5 s of both cores here, so only ``--classify`` (12)
requests do one; the rest are cheap but real requests to the same server.

Run: ``.venv-fhe/bin/python benchmarks/fhe_service_load.py`` (about 1-2 minutes on 2 cores).
Results: ``benchmarks/results/fhe-service-load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
import torch.nn.functional as F

from robustlab.crypto import QuantSpec, quantize
from robustlab.crypto.artifact import compile_artifact
from robustlab.crypto.envelope import MAGIC, checksum, open_envelope, seal
from robustlab.crypto.protocol import ClientBundle, FheClient
from robustlab.data import dataset_info, load_split
from robustlab.io import atomic_write_json
from robustlab.models import build_model
from robustlab.provenance import provenance

TOKENS = {"alice": "alice-" + "a" * 26, "bob": "bob-" + "b" * 28, "mallory": "mallory-" + "m" * 24}
SERVE_OPTIONS = [
    "--max-input-mib", "1", "--max-key-mib", "256", "--body-timeout", "2",
    "--header-timeout", "2", "--max-clients", "4", "--token-key-sets", "2",
    "--max-uploads", "2", "--uploads-per-token", "1",
]  # fmt: skip
EXPECTED: dict[str, set[int]] = {
    "health": {200},
    "bundle": {200},
    "classify": {200},
    "upload": {200, 503},  # 503: both upload slots busy (stalled uploads hold them ≤ 2 s)
    "flipped": {200, 503},  # accepted, evicting only mallory's own; or no slot / no room
    "no_token": {401},
    "bad_token": {401},
    "garbage": {400},
    "wrong_type": {400, 503},  # 503: a /keys request, so it needs an upload slot too
    "unknown_client": {404},
    "oversized_input": {413},
    "oversized_upload": {413},
    "malformed_http": {400},
    "stalled_upload": {408, 503},  # 408 after 2 s in a slot, or 503 at once without one
    "stalled_headers": {408},
}
VALID = ("health", "bundle", "classify", "upload")
CHUNK = 1 << 20
IMAGES = 6
"""Distinct encrypted test images the classify requests cycle through."""


def train_network() -> Any:
    """The tests' 64→8→10 digits MLP, quantised to 3-bit weights, 2-bit activations."""
    train = load_split("digits", "train")
    info = dataset_info("digits")
    torch.manual_seed(0)
    model = build_model(
        "mlp",
        input_shape=info.input_shape,
        num_classes=10,
        mean=info.mean,
        std=info.std,
        depth=1,
        width=8,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(train.images), train.labels)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    spec = QuantSpec(weight_bits=3, activation_bits=2, input_bits=2, lookup_bits=4)
    return quantize(model.eval(), train.images, spec), train


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def wrong_type_message() -> bytes:
    header = json.dumps({"kind": ["evaluation-keys"], "circuit": 5, "key": None, "size": "7"})
    return MAGIC + len(header).to_bytes(4, "big") + header.encode() + b"payload"


def flipped(keys: bytes, seed: int) -> bytes:
    envelope = open_envelope(keys, kind="evaluation-keys")
    payload = bytearray(envelope.payload)
    for position in np.random.default_rng(seed).integers(len(payload) // 4, len(payload), 16):
        payload[position] ^= 0xFF
    return seal("evaluation-keys", envelope.circuit, checksum(bytes(payload)), bytes(payload))


async def raw(port: int, request: bytes, linger: bool = False) -> int:
    """Send raw bytes (and, with ``linger``, then say nothing); the status the server gives
    before it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=30)  # until the server closes
    finally:
        writer.close()
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


class Load:
    def __init__(self, url: str, client: FheClient, client_id: str, messages: list[bytes]):
        self.url, self.client, self.client_id = url, client, client_id
        self.port = int(url.rsplit(":", 1)[1])
        self.messages = messages
        self.keys = client.evaluation_keys()
        self.answers: list[tuple[int, bytes]] = []
        pool = httpx.Limits(max_connections=40, keepalive_expiry=2.0)  # < the server's 5 s
        self.http = httpx.AsyncClient(base_url=url, timeout=60, limits=pool)

    async def send(self, kind: str, index: int) -> int:
        """Send one request of ``kind``; the HTTP status it got."""
        if kind in RAW:
            return await raw(self.port, RAW[kind](TOKENS[("alice", "bob", "mallory")[index % 3]]))
        method, path, body, who = self.request(kind, index)
        headers = {"authorization": f"Bearer {TOKENS.get(who, who)}"} if who else {}
        content: Any = body
        if body is not None and len(body) > CHUNK:
            headers["content-length"] = str(len(body))
            content = chunks(body)
        response = await self.http.request(method, path, content=content, headers=headers)
        if kind == "classify" and response.status_code == 200:
            self.answers.append((index % IMAGES, response.content))
        return response.status_code

    def request(self, kind: str, index: int) -> tuple[str, str, bytes | None, str]:
        """Method, path, body and token (a name, another string, or none) of a request."""
        classify = f"/clients/{self.client_id}/classify"
        requests: dict[str, Callable[[], tuple[str, str, bytes | None, str]]] = {
            "health": lambda: ("GET", "/health", None, ""),
            "bundle": lambda: ("GET", "/client", None, "alice"),
            "classify": lambda: ("POST", classify, self.messages[index % IMAGES], "alice"),
            "upload": lambda: ("POST", "/keys", self.keys, ("alice", "bob")[index % 2]),
            "flipped": lambda: ("POST", "/keys", flipped(self.keys, index), "mallory"),
            "no_token": lambda: ("GET", "/client", None, ""),
            "bad_token": lambda: ("GET", "/client", None, "z" * 30),
            "garbage": lambda: ("POST", classify, os.urandom(2048), "alice"),
            "wrong_type": lambda: ("POST", "/keys", wrong_type_message(), "alice"),
            "unknown_client": lambda: ("POST", "/clients/nobody/classify", b"x", "alice"),
            "oversized_input": lambda: ("POST", classify, b"0" * (3 << 19), "alice"),
        }
        return requests[kind]()


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    """A large body in pieces: asyncio copies a pending write buffer each time the socket
    takes a piece of it, so one 33 MB write costs the client seconds of CPU (and its other
    connections their turn)."""
    view = memoryview(body)
    for start in range(0, len(body), CHUNK):
        yield bytes(view[start : start + CHUNK])


def _upload_head(token: str, declared: int) -> bytes:
    return (
        f"POST /keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
        f"content-length: {declared}\r\n\r\n"
    ).encode()


RAW: dict[str, Callable[[str], bytes]] = {
    "oversized_upload": lambda token: _upload_head(token, 2 << 30) + b"k" * 1024,
    "stalled_upload": lambda token: _upload_head(token, 200 << 20) + b"k" * 1024,
    "stalled_headers": lambda token: b"POST /keys HTTP/1.1\r\nhost: x\r\n",
    "malformed_http": lambda token: (
        b"POST /keys HTTP/1.1\r\nhost: x\r\ncontent-length: 12x\r\n\r\n"
    ),
}
"""Requests sent over a bare socket: a declared size never sent, a stall, broken HTTP."""


async def run_load(load: Load, plan: list[str], concurrency: int) -> list[dict[str, Any]]:
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for index, kind in enumerate(plan):
        queue.put_nowait((index, kind))
    records: list[dict[str, Any]] = []

    async def worker() -> None:
        while not queue.empty():
            index, kind = queue.get_nowait()
            started = time.perf_counter()
            try:
                status, error = await load.send(kind, index), ""
            except Exception as failure:  # a reset, a timeout: the request was dropped
                status, error = 0, f"{type(failure).__name__}: {failure}"
            records.append(
                {
                    "kind": kind,
                    "status": status,
                    "seconds": time.perf_counter() - started,
                    "error": error,
                }
            )

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await load.http.aclose()
    return records


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ordered = sorted(seconds)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "n": len(ordered),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * at(0.95), 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def build_plan(requests: int, counts: dict[str, int], seed: int) -> list[str]:
    fixed = [kind for kind, count in counts.items() for _ in range(count)]
    cheap = [k for k in EXPECTED if k not in counts]
    plan = fixed + [cheap[i % len(cheap)] for i in range(max(0, requests - len(fixed)))]
    random.Random(seed).shuffle(plan)
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--classify", type=int, default=12, help="real encrypted classifications")
    parser.add_argument("--uploads", type=int, default=4, help="valid key uploads")
    parser.add_argument("--stalled", type=int, default=20, help="stalled uploads and headers each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="saved with the results")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/fhe-service-load.json")
    )
    args = parser.parse_args()
    begun = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="fhe-service-load-"))
    network, train = train_network()
    compile_artifact(work / "artifact", network, network.quantize_inputs(train.images[:20]))
    tokens = work / "tokens"
    tokens.write_text("".join(f"{name}:{token}\n" for name, token in TOKENS.items()))
    tokens.chmod(0o600)
    port = free_port()
    command = [
        sys.executable, "-m", "robustlab", "fhe", "serve", str(work / "artifact"),
        "--port", str(port), "--token-file", str(tokens), *SERVE_OPTIONS,
    ]  # fmt: skip
    log = (work / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"the service did not start; see {work / 'server.log'}")
            time.sleep(0.2)
        idle_rss = memory_kib(server.pid, "VmRSS")
        client = FheClient(ClientBundle.from_artifact(work / "artifact"))
        client.keygen(seed=1)
        alice = {"authorization": f"Bearer {TOKENS['alice']}"}
        client_id = httpx.post(
            f"{url}/keys", content=client.evaluation_keys(), headers=alice, timeout=120
        ).json()["client"]
        test = load_split("digits", "test")
        images = test.images[:IMAGES]
        messages = [client.encrypt(image.numpy()) for image in images]
        counts = {
            "classify": args.classify,
            "upload": args.uploads,
            "flipped": args.uploads,
            "stalled_upload": args.stalled,
            "stalled_headers": args.stalled,
        }
        plan = build_plan(args.requests, counts, args.seed)
        load = Load(url, client, client_id, messages)
        started = time.perf_counter()
        records = asyncio.run(run_load(load, plan, args.concurrency))
        load_s = time.perf_counter() - started
        # Afterwards: the real client still has its keys (bit-flipped copies evicted nothing)
        # and its answers decrypt to the plain network's logits.
        after = httpx.post(
            f"{url}/clients/{client_id}/classify", content=messages[0], headers=alice, timeout=120
        )
        plain = network.logits(images)
        correct = sum(
            bool(np.array_equal(client.decrypt(answer), plain[index]))
            for index, answer in [*load.answers, (0, after.content)]
        )
        peak_rss, final_rss = memory_kib(server.pid, "VmHWM"), memory_kib(server.pid, "VmRSS")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    server_log = (work / "server.log").read_text()
    by_kind: dict[str, Counter[int]] = defaultdict(Counter)
    for record in records:
        by_kind[record["kind"]][record["status"]] += 1
    unexpected = [r for r in records if r["status"] not in EXPECTED[r["kind"]]]
    dropped = [r for r in records if r["status"] == 0]
    valid = [r["seconds"] for r in records if r["kind"] in VALID and r["status"] == 200]
    result = {
        "requests": len(records),
        "concurrency": args.concurrency,
        "load_seconds": round(load_s, 1),
        "dropped": len(dropped),
        "unexpected": len(unexpected),
        "unexpected_examples": unexpected[:5],
        "dropped_examples": dropped[:10],
        "status_by_kind": {k: dict(sorted(v.items())) for k, v in sorted(by_kind.items())},
        "expected_by_kind": {k: sorted(v) for k, v in EXPECTED.items()},
        "errors_by_class": dict(sorted(Counter(str(r["status"]) for r in records).items())),
        "latency": {
            "all": percentiles([r["seconds"] for r in records]),
            "valid_answered_200": percentiles(valid),
            **{
                kind: percentiles([r["seconds"] for r in records if r["kind"] == kind])
                for kind in EXPECTED
            },
        },
        "decryptions_correct": f"{correct}/{len(load.answers) + 1}",
        "real_client_kept_after_load": after.status_code == 200,
        "server_rss_mib": {
            "idle": round(idle_rss / 1024, 1),
            "peak": round(peak_rss / 1024, 1),
            "final": round(final_rss / 1024, 1),
        },
        "server_tracebacks": server_log.count("Traceback"),
        "server_options": SERVE_OPTIONS,
        "total_seconds": round(time.perf_counter() - begun, 1),
        "note": args.note,
        "provenance": provenance(),
    }
    atomic_write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=1))
    if dropped or unexpected or result["server_tracebacks"]:
        sys.exit(f"failed: the artifact and the server's log are in {work}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
