"""One writer per folder: a run or experiment folder is locked while a process writes it.

The lock is ``flock`` on ``.lock`` inside the folder, so listings of the folders beside it
stay as they were and the lock goes with the folder when that is deleted. The kernel drops
the lock when its process ends, however it ends, so a killed run never blocks the next one
and there is nothing stale to clean up. The holder writes who it is into the lock file, so a
refused process can name it.

Locks are re-entrant within a process (the experiment runner and the trainer both take a
trial's), never shared between processes: worker processes and Ray tasks take the lock of
the run folder they write, while the process driving an experiment holds the experiment's.
``flock`` needs a POSIX system (Linux, macOS); elsewhere taking a lock fails with a clear error.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from robustlab.errors import CheckpointError
from robustlab.provenance import now_iso

_HELD: dict[Path, int] = {}
"""Lock files this process holds, with how many times each was taken."""


LOCK_NAME = ".lock"


def lock_file(folder: Path) -> Path:
    """Where ``folder``'s lock lives: inside it, hidden."""
    return folder / LOCK_NAME


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the block (creating the folder); ``what`` ("run folder")
    names it in errors."""
    folder.mkdir(parents=True, exist_ok=True)
    path = lock_file(folder.resolve())
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    fd = _acquire(path, folder, what)
    _HELD[path] = 1
    try:
        yield
    finally:
        del _HELD[path]
        _release(fd)


def read_holder(folder: Path) -> dict[str, Any] | None:
    """Who holds ``folder``'s lock, as its holder wrote it (None: nobody has written yet)."""
    try:
        text = lock_file(folder).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return _parse_holder(text)


def _acquire(path: Path, folder: Path, what: str) -> int:
    fcntl = _fcntl(folder, what)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _wait_for_holder(fd)
        os.close(fd)
        raise CheckpointError(_refusal(folder, what, holder, path)) from None
    except OSError as error:
        os.close(fd)
        raise CheckpointError(
            f"cannot lock {what} {folder} ({error}); its file system may not support locks "
            f"(flock on {path}). Write runs to a local disk or an NFS mount with locking"
        ) from None
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": now_iso(),
        "command": " ".join(sys.argv)[:300],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    return fd


def _release(fd: int) -> None:
    """Forget the holder first, so the next process never reads a former one's name."""
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor drops the flock


def _wait_for_holder(fd: int) -> dict[str, Any] | None:
    """The holder's own words; a process that has just taken the lock writes them at once."""
    for _ in range(10):
        holder = _parse_holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        if holder is not None:
            return holder
        time.sleep(0.05)
    return None


def _parse_holder(text: str) -> dict[str, Any] | None:
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return None
    return holder if isinstance(holder, dict) else None


def _refusal(folder: Path, what: str, holder: dict[str, Any] | None, path: Path) -> str:
    if holder is None:
        who = "another process (it has not said which yet)"
    else:
        who = (
            f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} "
            f"(`{holder.get('command')}`)"
        )
    return (
        f"{what} {folder} is being written by {who}. Two writers would mix their files: "
        "wait for that process to finish, or stop it, then run again (its lock goes with it, "
        f"even if it is killed; lock file {path})"
    )


def _fcntl(folder: Path, what: str) -> ModuleType:
    try:
        import fcntl
    except ImportError:
        raise CheckpointError(
            f"cannot lock {what} {folder}: folder locks need POSIX flock (Linux or macOS), "
            f"which {sys.platform} lacks; run robustlab there (e.g. under WSL)"
        ) from None
    return fcntl
