"""Atomic file writes: a crash mid-write must never leave a half-written file behind.

Everything a run keeps (configs, checkpoints, results, downloads) goes through here: write a
temporary file in the same directory, fsync it, then rename over the target. A process killed
mid-write leaves its temporary file (``.NAME.XXXXXXXX.tmp``) behind; whoever next holds the
folder removes it with ``remove_leftover_temporaries``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o644
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
"""The names ``temporary_file`` gives: ``.NAME.`` + mkstemp's eight random characters + ``.tmp``."""


def temporary_file(target: Path) -> tuple[int, str]:
    """An open, empty, shareable temporary file beside ``target`` (descriptor and name)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp_name, FILE_MODE)  # mkstemp creates 0600; results are shared like any file
    except BaseException:
        os.close(fd)
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return fd, tmp_name


def atomic_write(
    path: str | Path,
    write: Callable[[IO[bytes]], None],
    *,
    before_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Call ``write(handle)`` on a temporary file, then move it onto ``path`` atomically.

    ``before_replace(temporary)`` runs once the bytes are on disk and before they take the
    target's name: the integrity record uses it to note the new file's hash first.
    """
    target = Path(path)
    fd, tmp_name = temporary_file(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace(Path(tmp_name))
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
    return target


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    def write(handle: IO[bytes]) -> None:
        handle.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line and fsync, so a killed process loses at most the line being written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def remove_leftover_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files that killed atomic writes left in ``directory`` (not below).

    Only safe while no other process writes there: callers hold the folder's lock.
    """
    if not directory.is_dir():
        return []
    removed = []
    for entry in directory.iterdir():
        if TEMPORARY.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
