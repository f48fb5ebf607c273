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
from typing import Literal

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


@dataclass(frozen=True)
class Envelope:
    kind: Kind
    circuit: str
    """Id of the compiled circuit the payload was made for."""
    key: str
    """Id of the key set (the evaluation keys' checksum); empty before keys exist."""
    payload: bytes


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


def open_envelope(
    data: bytes,
    *,
    kind: Kind,
    circuit: str | None = None,
    key: str | None = None,
    source: str = "message",
) -> Envelope:
    """The checked contents of ``data``; ``circuit``/``key`` given: they must match too."""
    prefix = len(MAGIC) + 4
    if len(data) < prefix or not data.startswith(MAGIC):
        raise EnvelopeError(
            f"{source} is not a robustlab FHE message (it does not start with the expected "
            f"marker; got {len(data)} bytes); send bytes made by robustlab's FHE client"
        )
    length = int.from_bytes(data[len(MAGIC) : prefix], "big")
    if length > MAX_HEADER or prefix + length > len(data):
        raise EnvelopeError(f"{source} is truncated or damaged: its header runs past its end")
    try:
        header = json.loads(data[prefix : prefix + length].decode("utf-8"))
        found_kind, found_circuit, found_key = header["kind"], header["circuit"], header["key"]
        size, digest = int(header["size"]), str(header["sha256"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise EnvelopeError(f"{source} has a damaged header") from None
    payload = data[prefix + length :]
    if len(payload) != size:
        raise EnvelopeError(
            f"{source} is truncated: its payload has {len(payload)} of {size} bytes"
        )
    if checksum(payload) != digest:
        raise EnvelopeError(f"{source} is corrupted: its payload does not match its checksum")
    if found_kind != kind:
        raise MismatchError(
            f"{source} holds {KIND_WORDS.get(found_kind, repr(found_kind))}, but "
            f"{KIND_WORDS[kind]} was expected here"
        )
    if circuit is not None and found_circuit != circuit:
        raise MismatchError(
            f"{source} was made for circuit {found_circuit[:12]}, but this one is "
            f"{circuit[:12]}: get the client specs of this artifact (or recompile) and "
            "generate keys and ciphertexts for it"
        )
    if key is not None and found_key != key:
        raise MismatchError(
            f"{source} belongs to key set {found_key[:12]}, but key set {key[:12]} is in use: "
            "encrypt, evaluate and decrypt with the keys of one client"
        )
    return Envelope(found_kind, found_circuit, found_key, payload)
