"""A recorded sha256 beside every weights file and checkpoint, checked whenever one is read.

The record is a sidecar, ``NAME.sha256``, in ``sha256sum`` format (``sha256sum -c`` checks
it by hand): it travels with its file when a run folder is copied, and two files never share
a record that their writers would contend for.

A write records in two steps so that a kill at any moment leaves a record that vouches for
the file on disk, old or new: the new file's hash is *added* to the record before the file
takes its name, and the record is cut down to that hash after. A kill between the two can
therefore never pass for corruption on resume, while changed bytes match no listed hash.

Files from before these records were kept have no sidecar. They load, and the first load
records their hash (trust on first use), so a later change is caught like any other; a
folder that cannot be written to keeps loading them unchecked.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from robustlab.errors import CheckpointError
from robustlab.io import atomic_write, atomic_write_text, temporary_file

T = TypeVar("T")

SUFFIX = ".sha256"
DIGEST = re.compile(r"^[0-9a-f]{64}$")
ATTEMPTS = 3
"""Reads of a file and its record before a mismatch counts: a writer may be between the two."""

REPAIR = (
    "Do not use it: restore it from a backup, or delete the run folder that holds it and train "
    "that run again (for a trial of an experiment, `robustlab run` then retrains just that trial)"
)


def sidecar(path: Path) -> Path:
    """Where ``path``'s hash is recorded."""
    return path.with_name(path.name + SUFFIX)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded(path: Path) -> list[str] | None:
    """The hashes that vouch for ``path`` (None: no record, a file older than records)."""
    record = sidecar(path)
    try:
        text = record.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(_unreadable(record, str(error))) from None
    digests = [line.split(" ", 1)[0] for line in text.splitlines() if line.strip()]
    if not digests or not all(DIGEST.match(digest) for digest in digests):
        raise CheckpointError(_unreadable(record, "expected lines of `SHA256  NAME`"))
    return digests


def write_recorded(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` atomically and record its hash (in two steps: see the module's note)."""
    record = sidecar(path)
    written: list[str] = []

    def note(temporary: Path) -> None:
        written.append(file_sha256(temporary))
        vouching = [digest for digest in _vouching_now(path) if digest != written[0]]
        atomic_write_text(record, _lines([written[0], *vouching], path.name))

    atomic_write(path, write, before_replace=note)
    atomic_write_text(record, _lines(written, path.name))


def load_verified(path: Path, what: str, parse: Callable[[bytes], T]) -> T:
    """``parse`` of ``path``'s bytes once they match the record; a file without a record gets
    one after it parses (trust on first use). ``what`` names the file in errors."""

    def read() -> tuple[bytes, str]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{what} {path} does not exist") from None
        return data, hashlib.sha256(data).hexdigest()

    data, digest, listed = _checked(path, what, read)
    value = parse(data)
    if listed is None:
        record_if_absent(path, digest)
    return value


def verify_recorded(path: Path, what: str) -> None:
    """Raise unless ``path`` matches its record; a file without a record passes (legacy)."""
    _checked(path, what, lambda: (None, _digest_or_missing(path, what)))


def check_copy(original: Path, copy: Path, what: str) -> None:
    """Record ``copy``'s hash, first checking it against ``original``'s record if it has one."""
    digest = _digest_or_missing(copy, what)
    listed = recorded(original)
    if listed is not None and digest not in listed:
        raise CheckpointError(
            f"{what} {copy} is not an exact copy of {original}: its sha256 is {digest[:16]}…, "
            f"the original's record says {listed[0][:16]}…. Delete the run folder holding "
            f"{copy.name} and start it again"
        )
    record_if_absent(copy, digest)


def record_if_absent(path: Path, digest: str) -> None:
    """Create ``path``'s record unless one exists; never replace one (a writer's stands).

    Created by hard link, so it appears whole or not at all; a folder that refuses the write
    (read-only, no hard links) leaves the file unrecorded, as it was.
    """
    try:
        fd, temporary = temporary_file(sidecar(path))
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(_lines([digest], path.name))
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, sidecar(path))
    except OSError:  # FileExistsError included: a record appeared meanwhile, and it stands
        pass
    finally:
        Path(temporary).unlink(missing_ok=True)


def _checked(
    path: Path, what: str, read: Callable[[], tuple[T, str]]
) -> tuple[T, str, list[str] | None]:
    """``read()``'s value and hash once the hash is on ``path``'s record, and the record
    (None: no record). Read again before giving up: a writer may be between file and record."""
    attempt = 0
    while True:
        value, digest = read()
        listed = recorded(path)
        if listed is None or digest in listed:
            return value, digest, listed
        attempt += 1
        if attempt == ATTEMPTS:
            raise CheckpointError(_mismatch(path, what, digest, listed))
        time.sleep(0.05 * attempt)


def _vouching_now(path: Path) -> list[str]:
    """Hashes valid for the file now at ``path``, kept until the new file replaces it."""
    if not path.exists():
        return []
    try:
        listed = recorded(path)
    except CheckpointError:  # an unreadable record: replaced with the file
        return []
    return listed if listed is not None else [file_sha256(path)]


def _digest_or_missing(path: Path, what: str) -> str:
    try:
        return file_sha256(path)
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} does not exist") from None


def _lines(digests: list[str], name: str) -> str:
    return "".join(f"{digest}  {name}\n" for digest in digests)


def _mismatch(path: Path, what: str, digest: str, listed: list[str]) -> str:
    return (
        f"{what} {path} is corrupt or truncated: its sha256 is {digest[:16]}…, but "
        f"{sidecar(path).name} recorded {listed[0][:16]}… when robustlab wrote it, so its bytes "
        f"have changed since (disk or copy damage, or an edit). {REPAIR}"
    )


def _unreadable(record: Path, reason: str) -> str:
    return (
        f"integrity record {record} is unreadable ({reason}). Restore it from a backup; if you "
        f"trust {record.name.removesuffix(SUFFIX)} as it is, delete the record and the next load "
        "records the file's hash again"
    )
