"""The trial index: one SQLite file per experiment listing every trial with its status.

It is what ``robustlab sweep status`` reads and what a restarted run consults: a finished
trial is never trained again, and a trial whose config changed since it ran is refused with
the differing fields named. Only the process driving the experiment writes it (workers,
local or on a Ray cluster, report back to it), so one connection per call suffices.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from robustlab.errors import ConfigError

Status = Literal["pending", "running", "done", "failed"]
Role = Literal["trial", "shared"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    model TEXT,
    seed INTEGER,
    point TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'pending',
    config_hash TEXT,
    config TEXT,
    started REAL,
    finished REAL,
    seconds REAL,
    host TEXT,
    pid INTEGER,
    error TEXT,
    summary TEXT
)
"""


@dataclass(frozen=True)
class IndexRow:
    name: str
    role: Role
    model: str | None
    seed: int | None
    point: dict[str, Any]
    status: Status
    config_hash: str | None
    config: dict[str, Any] | None
    started: float | None
    finished: float | None
    seconds: float | None
    host: str | None
    pid: int | None
    error: str | None
    summary: dict[str, Any] | None

    @property
    def shown_status(self) -> str:
        """``running`` only while its process lives: a killed run reads ``interrupted``."""
        here = self.host == socket.gethostname()
        if self.status == "running" and here and self.pid and not _alive(self.pid):
            return "interrupted"
        return self.status


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


class TrialIndex:
    """``index.sqlite`` of one experiment folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=60)) as connection:
            connection.row_factory = sqlite3.Row
            with connection:  # one transaction, committed on success
                connection.execute(SCHEMA)
                yield connection

    def register(
        self, name: str, *, role: Role, model: str | None, seed: int | None, point: dict[str, Any]
    ) -> None:
        """Add a planned trial as pending (a known one keeps its status)."""
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO trials (name, role, model, seed, point) VALUES (?,?,?,?,?)",
                (name, role, model, seed, json.dumps(point, sort_keys=True, default=str)),
            )

    def check_config(
        self, name: str, config: dict[str, Any], comparable: dict[str, Any], *, on_disk: bool
    ) -> None:
        """Refuse a trial whose recorded config differs from ``config`` (naming the fields)
        while its run folder exists (``on_disk``); record the config otherwise. ``comparable``
        is what must match (device and data root may change between sessions)."""
        row = self.get(name)
        if on_disk and row is not None and row.config is not None and row.status != "pending":
            recorded = row.config.get("comparable", {})
            differences = differing_fields(recorded, comparable)
            if differences:
                raise ConfigError(
                    f"trial {name} ran with a different config; it differs in "
                    + ", ".join(differences)
                    + ". Rename the experiment (name:) or choose another output folder, or "
                    "delete the trial's folder to train it again"
                )
            return
        stored = {"comparable": comparable, "config": config}
        status = "pending" if not on_disk else (row.status if row is not None else "pending")
        with self._connect() as db:
            db.execute(
                "UPDATE trials SET config = ?, config_hash = ?, status = ? WHERE name = ?",
                (json.dumps(stored, sort_keys=True), config_hash(comparable), status, name),
            )

    def mark_running(self, name: str) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE trials SET status='running', started=?, host=?, pid=?, error=NULL "
                "WHERE name=?",
                (time.time(), socket.gethostname(), os.getpid(), name),
            )

    def mark_done(self, name: str, summary: dict[str, Any]) -> None:
        self._finish(name, "done", summary=json.dumps(summary, sort_keys=True), error=None)

    def mark_failed(self, name: str, error: str) -> None:
        self._finish(name, "failed", summary=None, error=error)

    def _finish(self, name: str, status: Status, *, summary: str | None, error: str | None) -> None:
        now = time.time()
        with self._connect() as db:
            db.execute(
                "UPDATE trials SET status=?, finished=?, "
                "seconds=CASE WHEN started IS NULL THEN NULL ELSE ? - started END, "
                "summary=COALESCE(?, summary), error=? WHERE name=?",
                (status, now, now, summary, error, name),
            )

    def get(self, name: str) -> IndexRow | None:
        with self._connect() as db:
            found = db.execute("SELECT * FROM trials WHERE name = ?", (name,)).fetchone()
        return None if found is None else _row(found)

    def rows(self) -> list[IndexRow]:
        if not self.path.exists():
            return []
        with self._connect() as db:
            found = db.execute("SELECT * FROM trials ORDER BY rowid").fetchall()
        return [_row(row) for row in found]


def differing_fields(saved: Any, requested: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two config dumps differ, with both values."""
    if isinstance(saved, dict) and isinstance(requested, dict):
        found = []
        for key in sorted(set(saved) | set(requested)):
            found += differing_fields(saved.get(key), requested.get(key), f"{prefix}{key}.")
        return found
    if isinstance(saved, list) and isinstance(requested, list) and len(saved) == len(requested):
        found = []
        for index, (left, right) in enumerate(zip(saved, requested, strict=True)):
            found += differing_fields(left, right, f"{prefix}{index}.")
        return found
    if saved != requested:
        return [f"{prefix.rstrip('.')} (recorded {saved!r}, now {requested!r})"]
    return []


def _row(row: sqlite3.Row) -> IndexRow:
    def loads(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    config = loads(row["config"])
    return IndexRow(
        name=row["name"],
        role=row["role"],
        model=row["model"],
        seed=row["seed"],
        point=loads(row["point"]) or {},
        status=row["status"],
        config_hash=row["config_hash"],
        config=config,
        started=row["started"],
        finished=row["finished"],
        seconds=row["seconds"],
        host=row["host"],
        pid=row["pid"],
        error=row["error"],
        summary=loads(row["summary"]),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
