"""Checksums computed while bytes stream past, so a file is read (and gunzipped) only once.

Gzip-compressed files are checked by the digest of their decompressed payload: distributors
recompress the .gz (Debian did), which changes the file's bytes but never the payload.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

from robustlab.data.records import Algorithm, CheckStatus, FileCheck

CHUNK_SIZE = 1 << 20


class CorruptStreamError(Exception):
    """Gzip data that cannot be decompressed; the message says what was wrong, not where."""


@dataclass(frozen=True)
class Checksum:
    """The expected digest of a file, or of its decompressed payload when ``of_payload``."""

    algorithm: Algorithm
    digest: str
    of_payload: bool = False

    def describe(self) -> str:
        what = " of the decompressed payload" if self.of_payload else ""
        return f"{self.algorithm} {self.digest}{what}"


def is_gzip_name(path: str | Path) -> bool:
    return str(path).endswith(".gz")


class Gunzip:
    """Incremental gzip decoder: accepts multi-member files and checks each member's CRC."""

    def __init__(self) -> None:
        self._decoder: zlib._Decompress | None = None
        self._members = 0

    def feed(self, chunk: bytes) -> bytes:
        pieces: list[bytes] = []
        data = chunk
        while data:
            if self._decoder is None or self._decoder.eof:
                if self._members:  # zero padding after a member is allowed, as gzip(1) does
                    data = data.lstrip(b"\0")
                    if not data:
                        break
                self._decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                pieces.append(self._decoder.decompress(data))
            except zlib.error as error:
                raise CorruptStreamError(f"corrupt gzip data ({error})") from None
            if self._decoder.eof:
                self._members += 1
                data = self._decoder.unused_data
            else:
                data = b""
        return b"".join(pieces)

    def finish(self) -> None:
        """Raise unless the stream ended exactly at the end of a gzip member."""
        if self._decoder is None:
            raise CorruptStreamError("empty file: no gzip data")
        if not self._decoder.eof:
            raise CorruptStreamError(
                "truncated gzip data: the file ends before the end of the compressed stream"
            )


class StreamDigest:
    """Digest (and optionally keep) what a checksum covers, fed the file's bytes in chunks."""

    def __init__(self, algorithm: Algorithm | None, *, gunzip: bool, keep: bool = False) -> None:
        self._hash = (
            hashlib.new(algorithm, usedforsecurity=False) if algorithm is not None else None
        )
        self._gunzip = Gunzip() if gunzip else None
        self.payload: bytearray | None = bytearray() if keep else None

    def update(self, chunk: bytes) -> None:
        data = self._gunzip.feed(chunk) if self._gunzip is not None else chunk
        if self._hash is not None:
            self._hash.update(data)
        if self.payload is not None:
            self.payload += data

    def finish(self) -> str | None:
        """The hex digest (None when not hashing); raises CorruptStreamError on bad gzip."""
        if self._gunzip is not None:
            self._gunzip.finish()
        return self._hash.hexdigest() if self._hash is not None else None


def stream_file(path: Path, digest: StreamDigest) -> str | None:
    """Feed a whole file through ``digest``; OSError and CorruptStreamError propagate."""
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.finish()


def digest_path(path: Path, checksum: Checksum) -> str:
    gunzip = checksum.of_payload and is_gzip_name(path)
    actual = stream_file(path, StreamDigest(checksum.algorithm, gunzip=gunzip))
    assert actual is not None
    return actual


def check_file(path: Path, checksum: Checksum) -> FileCheck:
    """Verify one file that is expected at ``path``; never raises for a bad file."""

    def verdict(status: CheckStatus, detail: str) -> FileCheck:
        return FileCheck(path, checksum.algorithm, checksum.digest, status, detail)

    if not path.is_file():
        return verdict("missing", "not found")
    try:
        actual = digest_path(path, checksum)
    except (OSError, CorruptStreamError) as error:
        return verdict("unreadable", str(error))
    if actual != checksum.digest:
        return verdict("mismatch", f"{checksum.algorithm} is {actual}, expected {checksum.digest}")
    return verdict("ok", checksum.describe())
