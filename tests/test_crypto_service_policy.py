"""The FHE service's rules without a circuit: tokens, who may listen where, which key sets an
upload may evict, how bodies are read, envelope headers of the wrong type, artifact checksums,
and the install hint of a missing extra. None of these needs concrete-python, so they run in
every environment (the HTTP end-to-end rows are in ``test_crypto_service.py``)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from robustlab.crypto.artifact import artifact_digest, read_verified, verify_artifact
from robustlab.crypto.auth import (
    ANONYMOUS,
    TOKEN_ENV,
    TOKENS_ENV,
    check_exposure,
    client_token,
    is_loopback,
    load_tokens,
    parse_tokens,
)
from robustlab.crypto.envelope import MAGIC, open_envelope, open_envelope_file, seal
from robustlab.crypto.errors import (
    AccessError,
    ArtifactError,
    CapacityError,
    EnvelopeError,
    MismatchError,
    QuotaError,
)
from robustlab.crypto.keystore import KeyStore
from robustlab.crypto.limits import Limits, MiB, Quotas
from robustlab.crypto.uploads import (
    BodyAborted,
    BodyTimeout,
    BodyTooLarge,
    UploadSlots,
    check_declared,
    receive_body,
)
from robustlab.errors import ConfigError

ALICE, BOB = "a" * 24, "b" * 24


# --- tokens and exposure -------------------------------------------------------------------


def test_tokens_from_a_file_and_the_environment_name_their_owners(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"# service tokens\nalice:{ALICE}\n\n{BOB}  # unnamed\n")
    tokens = load_tokens(file, environ={TOKENS_ENV: "carol:" + "c" * 30 + ", " + "d" * 16})
    assert tokens.enabled and len(tokens.names) == 4
    assert tokens.owner(f"Bearer {ALICE}") == "alice"
    assert tokens.owner(f"bearer   {'c' * 30}") == "carol"
    assert tokens.owner(f"Bearer {BOB}") == f"token-{hashlib.sha256(BOB.encode()).hexdigest()[:8]}"
    for refused in (None, "", "Bearer", f"Basic {ALICE}", f"Bearer {ALICE}x", f"{ALICE}"):
        assert tokens.owner(refused) is None
    assert load_tokens(None, environ={}).owner(None) == ANONYMOUS  # no tokens: one owner


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("short-token", "at least 16"),
        ("bad token with spaces in it", "at least 16"),
        ("x" * 20 + "é", "at least 16"),
        (f"a:{ALICE}\na:{BOB}", "name is repeated"),
        (f"a:{ALICE}\nb:{ALICE}", "listed twice"),
        (f"bad!name:{ALICE}", "token name"),
    ],
)
def test_weak_or_ambiguous_tokens_are_refused(text: str, message: str) -> None:
    with pytest.raises(AccessError, match=message):
        parse_tokens(text)


def test_a_token_file_that_is_empty_or_missing_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(AccessError, match="holds no token"):
        load_tokens(tmp_path / "empty", environ={})
    with pytest.raises(AccessError, match="unreadable"):
        load_tokens(tmp_path / "missing", environ={})


def test_the_client_sends_exactly_one_token(tmp_path: Path) -> None:
    (tmp_path / "mine").write_text(f"alice:{ALICE}\n")
    assert client_token(tmp_path / "mine", environ={}) == ALICE
    assert client_token(None, environ={TOKEN_ENV: BOB}) == BOB
    assert client_token(None, environ={}) is None
    (tmp_path / "two").write_text(f"{ALICE}\n{BOB}\n")
    with pytest.raises(AccessError, match="exactly one"):
        client_token(tmp_path / "two", environ={})


def test_only_loopback_may_listen_without_tokens() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_exposure(host, parse_tokens(""))
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(AccessError, match=f"--host {host} is not a loopback address"):
            check_exposure(host, parse_tokens(""))
        check_exposure(host, parse_tokens(ALICE))  # with tokens: allowed


# --- key sets: quotas and eviction ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # every look is a later moment: recency is well defined
        return self.now


def test_no_upload_evicts_another_tokens_key_sets() -> None:
    """The issue's row: with room for 2 key sets, uploads from another token (such as
    bit-flipped copies of a real client's keys) are refused once full; never evicting."""
    store = KeyStore(Quotas(max_clients=2, token_key_sets=2), clock=Clock())
    store.add("alice", "real", object(), 1)
    store.add("mallory", "copy-1", object(), 1)
    assert store.add("mallory", "copy-2", object(), 1) == ["copy-1"]  # its own, oldest first
    assert store.add("mallory", "copy-3", object(), 1) == ["copy-2"]
    assert store.has("alice", "real") and store.get("alice", "real") is not None
    with pytest.raises(CapacityError, match="none of theirs is evicted"):
        store.add("bob", "new", object(), 1)
    assert sorted(store.clients()) == ["copy-3", "real"]


def test_a_tokens_own_limit_evicts_its_least_recently_used_key_set() -> None:
    store = KeyStore(Quotas(max_clients=8, token_key_sets=2), clock=Clock())
    store.add("alice", "one", object(), 1)
    store.add("alice", "two", object(), 1)
    store.get("alice", "one")  # used: "two" is now the least recently used
    assert store.add("alice", "three", object(), 1) == ["two"]
    assert store.add("alice", "three", object(), 1) == []  # the same keys again: replaced
    assert sorted(store.clients("alice")) == ["one", "three"]


def test_memory_quotas_per_token_and_in_all() -> None:
    quotas = Quotas(max_clients=8, max_memory=5 * MiB, token_key_sets=8, token_memory=3 * MiB)
    store = KeyStore(quotas, clock=Clock())
    store.add("alice", "one", object(), 2 * MiB)
    assert store.add("alice", "two", object(), 2 * MiB) == ["one"]  # 4 MiB > 3: its own goes
    store.add("bob", "one", object(), 2 * MiB)
    with pytest.raises(CapacityError):  # 2 + 2 + 2 > 5, and no set of alice's or bob's is carol's
        store.add("carol", "one", object(), 2 * MiB)
    with pytest.raises(QuotaError, match="more than a token may hold"):
        store.add("carol", "huge", object(), 4 * MiB)
    assert store.memory() == 4 * MiB


def test_a_key_set_unused_for_its_ttl_expires_and_a_client_id_needs_its_owner() -> None:
    clock = Clock()
    store = KeyStore(Quotas(idle_ttl=10), clock=clock)
    store.add("alice", "keys", object(), 1)
    assert not store.has("bob", "keys") and store.get("bob", "keys") is None
    store.add("bob", "keys", object(), 1)  # the same bytes from another token: its own entry
    clock.now += 100
    assert store.clients() == []


def test_limits_and_quotas_refuse_nonsense() -> None:
    with pytest.raises(ConfigError, match="body-timeout must be > 0"):
        Limits(body_timeout=0)
    with pytest.raises(ConfigError, match="uploads-per-token"):
        Limits(max_uploads=1, uploads_per_token=2)
    with pytest.raises(ConfigError, match="max-clients must be > 0"):
        Quotas(max_clients=0)


# --- bodies --------------------------------------------------------------------------------


def feed(chunks: list[bytes], stall: bool = False) -> Any:
    """An ASGI ``receive`` that hands out ``chunks``, then waits for ever if ``stall``."""
    queue = list(chunks)

    async def receive() -> dict[str, object]:
        if not queue:
            if stall:
                await asyncio.sleep(3600)
            return {"type": "http.disconnect"}
        chunk = queue.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue) or stall}

    return receive


def test_a_large_body_is_spooled_to_a_file_not_joined_in_memory(tmp_path: Path) -> None:
    limits = Limits(spool_memory=MiB, spool_dir=tmp_path)
    chunks = [bytes([i]) * (64 << 10) for i in range(48)]  # 3 MiB in 64 KiB chunks
    body = asyncio.run(receive_body(feed(chunks), 4 * MiB, limits, "keys"))
    try:
        assert body.size == 3 * MiB
        assert body.file._rolled  # on disk: past spool_memory
        assert os.fstat(body.file.fileno()).st_size == 3 * MiB
        assert body.read() == b"".join(chunks)
        assert list(tmp_path.iterdir()) == []  # an unnamed file: nothing left behind
    finally:
        body.close()


def test_bodies_too_large_too_slow_or_abandoned_are_refused() -> None:
    limits = Limits(body_timeout=0.2, body_deadline=0.5)
    with pytest.raises(BodyTooLarge, match="exceeds the limit of 10 bytes"):
        asyncio.run(receive_body(feed([b"x" * 8, b"x" * 8]), 10, limits, "keys"))
    with pytest.raises(BodyTimeout, match=r"nothing arrived for 0\.2 s"):
        asyncio.run(receive_body(feed([b"x"], stall=True), 10, limits, "keys"))

    async def trickle() -> dict[str, object]:
        await asyncio.sleep(0.1)
        return {"type": "http.request", "body": b"x", "more_body": True}

    with pytest.raises(BodyTimeout, match=r"took longer than 0\.5 s"):
        asyncio.run(receive_body(trickle, 1000, limits, "keys"))
    with pytest.raises(BodyAborted):
        asyncio.run(receive_body(feed([]), 10, limits, "keys"))
    with pytest.raises(BodyTooLarge, match="of 11 bytes exceeds"):
        check_declared("11", 10, "keys")
    check_declared("10", 10, "keys")


def test_upload_slots_cap_all_and_each_token() -> None:
    slots = UploadSlots(total=2, per_owner=1)
    assert slots.claim("alice") and not slots.claim("alice")
    assert slots.claim("bob") and not slots.claim("carol")
    slots.release("alice")
    assert slots.claim("carol") and slots.in_use == 2


# --- envelope headers of the wrong JSON type ------------------------------------------------


def framed(header: object, payload: bytes = b"payload") -> bytes:
    raw = json.dumps(header).encode("utf-8")
    return MAGIC + len(raw).to_bytes(4, "big") + raw + payload


GOOD = {"kind": "input", "circuit": "c", "key": "k", "size": 7}
WRONG_TYPES = [
    ["input", "c", "k"],
    "a string",
    None,
    {**GOOD, "kind": ["input"]},
    {**GOOD, "kind": {"a": 1}},
    {**GOOD, "circuit": 5},
    {**GOOD, "circuit": None},
    {**GOOD, "key": ["k"]},
    {**GOOD, "size": "7"},
    {**GOOD, "size": 7.0},
    {**GOOD, "size": True},
    {**GOOD, "size": -1},
    {**GOOD, "sha256": 12},
    {k: v for k, v in GOOD.items() if k != "key"},
]


def with_digest(header: object) -> object:
    """A dict header gets the payload's right checksum unless the case sets its own."""
    if isinstance(header, dict) and "sha256" not in header:
        return {**header, "sha256": hashlib.sha256(b"payload").hexdigest()}
    return header


WRONG_TYPE_MESSAGES = [framed(with_digest(header)) for header in WRONG_TYPES]
"""Each a message whose header has one field of the wrong JSON type (or is no object)."""


@pytest.mark.parametrize("data", WRONG_TYPE_MESSAGES)
def test_header_fields_of_the_wrong_type_are_envelope_errors(data: bytes) -> None:
    for call in (
        lambda: open_envelope(data, kind="input", circuit="other", key="other"),
        lambda: open_envelope_file(
            io.BytesIO(data), len(data), kind="input", circuit="other", key="other"
        ),
    ):
        with pytest.raises(EnvelopeError, match="damaged header"):
            call()


def test_envelopes_read_from_a_file_are_checked_like_bytes() -> None:
    message = seal("input", "circuit-a", "key-a", b"payload" * 10)
    opened = open_envelope_file(io.BytesIO(message), len(message), kind="input", key="key-a")
    assert opened.payload == b"payload" * 10
    with pytest.raises(EnvelopeError, match="truncated"):
        open_envelope_file(io.BytesIO(message[:-3]), len(message) - 3, kind="input")
    with pytest.raises(EnvelopeError, match="not a robustlab FHE message"):
        open_envelope_file(io.BytesIO(b"garbage"), 7, kind="input")
    with pytest.raises(MismatchError, match="belongs to key set"):
        open_envelope_file(io.BytesIO(message), len(message), kind="input", key="key-b")


# --- artifact checksums --------------------------------------------------------------------


def fake_artifact(directory: Path) -> dict[str, object]:
    files = {"server.zip": b"PK library", "client.json": b"{}", "network.npz": b"npz"}
    for name, data in files.items():
        (directory / name).write_bytes(data)
    manifest = {"files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_artifact_files_are_checked_against_their_recorded_checksums(tmp_path: Path) -> None:
    manifest = fake_artifact(tmp_path)
    verify_artifact(tmp_path, manifest, artifact_digest(tmp_path))
    assert read_verified(tmp_path / "server.zip", manifest) == b"PK library"
    (tmp_path / "server.zip").write_bytes(b"PK librarY")
    with pytest.raises(ArtifactError, match=r"server\.zip: sha256 .* does not match"):
        verify_artifact(tmp_path, manifest)
    with pytest.raises(ArtifactError, match=r"records no checksum for server\.zip"):
        read_verified(tmp_path / "server.zip", {"files": {}})
    with pytest.raises(ArtifactError, match="not the expected artifact digest"):
        verify_artifact(tmp_path, manifest, "0" * 64)


# --- the install hint of a missing extra ---------------------------------------------------

BLOCK_CONCRETE = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "concrete" or name.startswith("concrete."):
            raise ImportError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Block())
sys.argv = ["robustlab", "fhe", "compile", "no-such-run"]
from robustlab.cli import main
main()
"""


def test_fhe_compile_without_the_extra_prints_the_whole_install_hint() -> None:
    """rich markup used to eat ``[fhe]``: the hint read ``pip install 'robustlab'``."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_CONCRETE], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'robustlab[fhe]'" in " ".join(done.stderr.split()), done.stderr
