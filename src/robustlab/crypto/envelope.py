"""Framing for every key and ciphertext that leaves a process: what it is, which circuit and
which key set it belongs to, and a checksum.

concrete-python's own bytes carry none of this, and TFHE evaluated under the wrong evaluation
keys gives silent garbage, not an error. So each message is
``MAGIC | header length (4 bytes, big-endian) | JSON header | payload`` and is checked on
arrival: truncation, corruption, the wrong kind of message, another circuit or another key
set each raise an error that says so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import BinaryIO, Literal

from robustlab.crypto.errors import EnvelopeError, MismatchError

MAGIC = b"RLFHE\x01"
Kind = Literal["evaluation-keys", "secret-keys", "input", "output"]
KIND_WORDS: dict[str, str] = {
    "evaluation-keys": "evaluation keys",
    "secret-keys": "secret keys",
    "input": "an encrypted input",
    "output": "an encrypted output",
}
MAX_HEADER = 4096
PREFIX = len(MAGIC) + 4
"""Marker and header length: what comes before the JSON header."""


@dataclass(frozen=True)
class Envelope:
    kind: Kind
    circuit: str
    """Id of the compiled circuit the payload was made for."""
    key: str
    """Id of the key set (the evaluation keys' checksum); empty before keys exist."""
    payload: bytes


@dataclass(frozen=True)
class Header:
    """The JSON header, its fields checked for type (not yet for meaning)."""

    kind: str
    circuit: str
    key: str
    size: int
    sha256: str


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal(kind: Kind, circuit: str, key: str, payload: bytes) -> bytes:
    header = json.dumps(
        {
            "kind": kind,
            "circuit": circuit,
            "key": key,
            "size": len(payload),
            "sha256": checksum(payload),
        },
        sort_keys=True,
    ).encode("utf-8")
    return MAGIC + len(header).to_bytes(4, "big") + header + payload


def _damaged(source: str, why: str) -> EnvelopeError:
    return EnvelopeError(
        f"{source} has a damaged header ({why}); send bytes made by robustlab's FHE client"
    )


def header_length(prefix: bytes, total: int, source: str = "message") -> int:
    """The header's length from the first ``PREFIX`` bytes of a message of ``total`` bytes."""
    if total < PREFIX or len(prefix) < PREFIX or not prefix.startswith(MAGIC):
        raise EnvelopeError(
            f"{source} is not a robustlab FHE message (it does not start with the expected "
            f"marker; got {total} bytes); send bytes made by robustlab's FHE client"
        )
    length = int.from_bytes(prefix[len(MAGIC) : PREFIX], "big")
    if length > MAX_HEADER or PREFIX + length > total:
        raise EnvelopeError(f"{source} is truncated or damaged: its header runs past its end")
    return length


def parse_header(raw: bytes, source: str = "message") -> Header:
    """The header's fields, each of the type ``seal`` writes: anything else is damage.

    A field of the wrong JSON type (a list for a kind, a string for a size) must be refused
    here, or it surfaces later as a TypeError, which a server would answer with a 500.
    """
    try:
        fields = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _damaged(source, "not JSON") from None
    if not isinstance(fields, dict):
        raise _damaged(source, f"a JSON object was expected, got {type(fields).__name__}")
    for name in ("kind", "circuit", "key", "sha256"):
        if not isinstance(fields.get(name), str):
            raise _damaged(source, f"field {name!r} must be a string")
    size = fields.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _damaged(source, "field 'size' must be a non-negative integer")
    return Header(fields["kind"], fields["circuit"], fields["key"], size, fields["sha256"])


def check_identity(
    header: Header, kind: Kind, circuit: str | None, key: str | None, source: str
) -> None:
    """Refuse a message of another kind, circuit or key set than the one expected here."""
    if header.kind != kind:
        raise MismatchError(
            f"{source} holds {KIND_WORDS.get(header.kind, repr(header.kind[:40]))}, but "
            f"{KIND_WORDS[kind]} was expected here"
        )
    if circuit is not None and header.circuit != circuit:
        raise MismatchError(
            f"{source} was made for circuit {header.circuit[:12]}, but this one is "
            f"{circuit[:12]}: get the client specs of this artifact (or recompile) and "
            "generate keys and ciphertexts for it"
        )
    if key is not None and header.key != key:
        raise MismatchError(
            f"{source} belongs to key set {header.key[:12]}, but key set {key[:12]} is in use: "
            "encrypt, evaluate and decrypt with the keys of one client"
        )


def _check_payload(header: Header, payload: bytes, source: str) -> None:
    if len(payload) != header.size:
        raise EnvelopeError(
            f"{source} is truncated: its payload has {len(payload)} of {header.size} bytes"
        )
    if checksum(payload) != header.sha256:
        raise EnvelopeError(f"{source} is corrupted: its payload does not match its checksum")


def open_envelope(
    data: bytes,
    *,
    kind: Kind,
    circuit: str | None = None,
    key: str | None = None,
    source: str = "message",
) -> Envelope:
    """The checked contents of ``data``; ``circuit``/``key`` given: they must match too."""
    length = header_length(data[:PREFIX], len(data), source)
    header = parse_header(data[PREFIX : PREFIX + length], source)
    payload = data[PREFIX + length :]
    _check_payload(header, payload, source)
    check_identity(header, kind, circuit, key, source)
    return Envelope(kind, header.circuit, header.key, payload)


def open_envelope_file(
    file: BinaryIO,
    size: int,
    *,
    kind: Kind,
    circuit: str | None = None,
    key: str | None = None,
    source: str = "message",
) -> Envelope:
    """``open_envelope`` for a message of ``size`` bytes in ``file`` (an upload spooled to
    disk): the payload is read once, never held twice."""
    file.seek(0)
    length = header_length(file.read(PREFIX), size, source)
    header = parse_header(file.read(length), source)
    if size - PREFIX - length != header.size:
        raise EnvelopeError(
            f"{source} is truncated: its payload has {size - PREFIX - length} of "
            f"{header.size} bytes"
        )
    payload = file.read(header.size)
    _check_payload(header, payload, source)
    check_identity(header, kind, circuit, key, source)
    return Envelope(kind, header.circuit, header.key, payload)
