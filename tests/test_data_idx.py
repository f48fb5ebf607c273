"""The IDX parser and the streaming gunzip/checksum helpers, on bytes made up in the test."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from robustlab.data.checksums import (
    Checksum,
    CorruptStreamError,
    Gunzip,
    StreamDigest,
    check_file,
    digest_path,
)
from robustlab.data.idx import parse_idx
from robustlab.errors import DatasetError


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_parses_every_type_in_native_order() -> None:
    cases = [
        (0x08, np.arange(24, dtype=np.uint8).reshape(2, 3, 4)),
        (0x09, np.array([-3, 0, 5], dtype=np.int8)),
        (0x0B, np.array([[-300, 2], [7, 30000]], dtype=np.int16)),
        (0x0C, np.array([1, -(2**31), 2**31 - 1], dtype=np.int32)),
        (0x0D, np.array([0.5, -1.25], dtype=np.float32)),
        (0x0E, np.array([1e300, -2.5], dtype=np.float64)),
    ]
    for code, array in cases:
        parsed = parse_idx(idx_bytes(array, code), "made-up")
        assert parsed.dtype == array.dtype and parsed.dtype.isnative
        assert parsed.shape == array.shape
        np.testing.assert_array_equal(parsed, array)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x00\x00", "shorter than the 4-byte magic"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "two zero bytes"),
        (b"\x00\x00\x07\x01" + b"\x00" * 4, "unknown data type code 0x07"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "ends inside the header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "trailing bytes"),
        (b"\x00\x00\x0c\x01\x00\x00\x00\x02" + b"\x00" * 7, "truncated"),
    ],
)
def test_bad_headers_name_the_file(data: bytes, problem: str) -> None:
    with pytest.raises(DatasetError) as raised:
        parse_idx(data, "/data/mnist/odd-file")
    assert "/data/mnist/odd-file" in str(raised.value) and problem in str(raised.value)


def test_gunzip_streams_in_small_chunks_and_multiple_members() -> None:
    payload = bytes(range(256)) * 500
    compressed = gzip.compress(payload[:1000]) + gzip.compress(payload[1000:]) + b"\0\0\0"
    decoder = Gunzip()
    out = b"".join(decoder.feed(compressed[i : i + 7]) for i in range(0, len(compressed), 7))
    decoder.finish()
    assert out == payload


def test_gunzip_rejects_truncated_and_garbage() -> None:
    compressed = gzip.compress(b"x" * 10000)
    decoder = Gunzip()
    decoder.feed(compressed[:-4])  # the size field of the trailer is missing
    with pytest.raises(CorruptStreamError, match="truncated"):
        decoder.finish()
    with pytest.raises(CorruptStreamError, match="corrupt gzip"):
        Gunzip().feed(b"plain text, not gzip")
    bad_crc = bytearray(compressed)
    bad_crc[-8] ^= 0xFF
    with pytest.raises(CorruptStreamError, match="corrupt gzip"):
        Gunzip().feed(bytes(bad_crc))
    with pytest.raises(CorruptStreamError, match="empty"):
        Gunzip().finish()


def test_stream_digest_and_check_file(tmp_path: Path) -> None:
    payload = b"canonical payload" * 1000
    path = tmp_path / "file.gz"
    path.write_bytes(gzip.compress(payload))
    payload_sha = hashlib.sha256(payload).hexdigest()
    file_md5 = hashlib.md5(path.read_bytes()).hexdigest()
    assert digest_path(path, Checksum("sha256", payload_sha, of_payload=True)) == payload_sha
    assert digest_path(path, Checksum("md5", file_md5)) == file_md5
    digest = StreamDigest(None, gunzip=True, keep=True)
    digest.update(path.read_bytes())
    assert digest.finish() is None and digest.payload == payload

    assert check_file(path, Checksum("sha256", payload_sha, of_payload=True)).status == "ok"
    mismatch = check_file(path, Checksum("sha256", "0" * 64, of_payload=True))
    assert mismatch.status == "mismatch" and payload_sha in mismatch.detail
    assert check_file(tmp_path / "absent.gz", Checksum("md5", file_md5)).status == "missing"
    path.write_bytes(path.read_bytes()[:20])
    unreadable = check_file(path, Checksum("sha256", payload_sha, of_payload=True))
    assert unreadable.status == "unreadable" and "truncated" in unreadable.detail
