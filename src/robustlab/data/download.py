"""Fetching canonical files from mirrors: stream to a temp file, verify, then rename into place.

A file only appears under its real name once its checksum matched, so an interrupted or
corrupt download never looks like a dataset file.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from robustlab.data.checksums import (
    CHUNK_SIZE,
    CorruptStreamError,
    StreamDigest,
    check_file,
    is_gzip_name,
)
from robustlab.data.source import RemoteFile
from robustlab.errors import DatasetError
from robustlab.io import atomic_write

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_so_far, total_bytes)`` per chunk; total is 0 when unknown."""

TIMEOUT_S = 60.0


class _MirrorFailedError(Exception):
    """One URL did not yield the canonical file; the message says why."""


def mirror_url(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def download_files(
    dataset: str,
    files: Sequence[RemoteFile],
    target_dir: Path,
    mirrors: Sequence[str],
    progress: Progress | None = None,
) -> list[Path]:
    """Fetch each file into ``target_dir`` unless a valid copy is already there."""
    if not mirrors:
        raise DatasetError(f"dataset {dataset!r}: no mirror to download from; pass --mirror URL")
    paths = []
    for remote in files:
        existing = _valid_local_copy(remote, target_dir)
        if existing is not None:
            paths.append(existing)
            continue
        failures = []
        for base in mirrors:
            url = mirror_url(base, remote.name)
            try:
                paths.append(_fetch(url, remote, target_dir / remote.name, progress))
                break
            except _MirrorFailedError as failure:
                failures.append(f"  {url}: {failure}")
        else:
            tried = "\n".join(failures)
            raise DatasetError(
                f"dataset {dataset!r}: could not download {remote.name}; tried:\n{tried}\n"
                "Fix: check the network (or the mirror) and retry, pass a working base URL with "
                f"--mirror URL, or copy the canonical file to {target_dir / remote.name}."
            )
    return paths


def _valid_local_copy(remote: RemoteFile, target_dir: Path) -> Path | None:
    for name in (remote.name, *remote.local_alternatives):
        if check_file(target_dir / name, remote.checksum).ok:
            return target_dir / name
    return None


def _fetch(url: str, remote: RemoteFile, target: Path, progress: Progress | None) -> Path:
    checksum = remote.checksum
    gunzip = checksum.of_payload and is_gzip_name(remote.name)

    def write(handle: IO[bytes]) -> None:
        digest = StreamDigest(checksum.algorithm, gunzip=gunzip)
        try:
            response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
        except (OSError, http.client.HTTPException, ValueError) as error:
            if isinstance(error, urllib.error.HTTPError):
                error.close()
            raise _MirrorFailedError(_describe(error)) from None
        with response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while True:
                try:
                    chunk = response.read(CHUNK_SIZE)
                except (OSError, http.client.HTTPException) as error:
                    raise _MirrorFailedError(_describe(error)) from None
                if not chunk:
                    break
                handle.write(chunk)
                try:
                    digest.update(chunk)
                except CorruptStreamError as error:
                    raise _MirrorFailedError(str(error)) from None
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        try:
            actual = digest.finish()
        except CorruptStreamError as error:
            raise _MirrorFailedError(str(error)) from None
        if actual != checksum.digest:
            raise _MirrorFailedError(
                f"checksum mismatch: got {checksum.algorithm} {actual}, "
                f"expected {checksum.describe()}"
            )

    return atomic_write(target, write)


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"failed ({error.reason})"
    if isinstance(error, TimeoutError):
        return f"timed out after {TIMEOUT_S:.0f} s"
    return f"{type(error).__name__}: {error}"
