"""The layout of a run directory, in one place.

``<run>/config.yaml``         the resolved trial config (what actually ran)
``<run>/metrics.jsonl``       one JSON line per epoch or evaluation
``<run>/checkpoints/last.pt`` full training state after the last completed epoch
``<run>/checkpoints/phase-<name>.safetensors``  weights at the end of each phase
``<run>/model.safetensors``   final weights
``<run>/results.json``        final metrics, wall time and provenance; present = finished
``<run>/**/NAME.sha256``      each weights file's and checkpoint's recorded hash
``<run>/.lock``               held while a process writes the run (``robustlab.store.lock``)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab.config import TrialConfig, load_trial, to_yaml
from robustlab.errors import CheckpointError
from robustlab.io import (
    append_line,
    atomic_write_json,
    atomic_write_text,
    remove_leftover_temporaries,
)
from robustlab.store.integrity import check_copy, verify_recorded
from robustlab.store.lock import LOCK_NAME, folder_lock, lock_file


@dataclass(frozen=True)
class RunDirectory:
    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    def phase_weights(self, phase_name: str) -> Path:
        return self.checkpoint_dir / f"phase-{phase_name}.safetensors"

    @property
    def final_weights(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def results_file(self) -> Path:
        return self.path / "results.json"

    def weight_files(self) -> Iterator[Path]:
        """Every weights file and checkpoint present: the files with a recorded sha256."""
        phases = sorted(self.checkpoint_dir.glob("phase-*.safetensors"))
        for path in (self.last_checkpoint, *phases, self.final_weights):
            if path.exists():
                yield path

    def lock(self) -> AbstractContextManager[None]:
        """Held while this process writes the run: a second writer is refused, named."""
        return folder_lock(self.path, "run folder")

    def remove_leftovers(self) -> None:
        """Temporary files of writes killed half way (call with the lock held)."""
        for folder in (self.path, self.checkpoint_dir):
            remove_leftover_temporaries(folder)

    def remove_if_unstarted(self) -> None:
        """Remove a folder that a writer locked but never wrote a run into (it stopped
        first), so that a run assembled elsewhere can be moved into its place."""
        if not self.path.is_dir() or self.has_started:
            return
        with self.lock():  # refused while that writer is still at it
            self.remove_leftovers()
            found = {entry.name for entry in self.path.iterdir()} - {LOCK_NAME}
            checkpoints = self.checkpoint_dir
            if found <= {checkpoints.name} and not any(checkpoints.glob("*")):
                lock_file(self.path).unlink()
                if checkpoints.exists():
                    checkpoints.rmdir()
                self.path.rmdir()
                return
        raise CheckpointError(
            f"{self.path} holds files but no run ({self.config_file.name} and "
            f"{self.last_checkpoint.name} are missing); move them away or delete the folder, "
            "then run again"
        )

    def verify(self) -> None:
        """Every weights file and checkpoint against its record: before a run is resumed."""
        for path in self.weight_files():
            verify_recorded(path, _what(path))

    def adopt_records(self, origin: RunDirectory) -> None:
        """Record the hashes of files copied from ``origin``, checked against its records."""
        for path in self.weight_files():
            original = origin.path / path.relative_to(self.path)
            if original.exists():
                check_copy(original, path, _what(path))

    @property
    def has_started(self) -> bool:
        return self.last_checkpoint.exists() or self.config_file.exists()

    @property
    def is_finished(self) -> bool:
        return self.results_file.exists()

    def write_config(self, config: TrialConfig) -> None:
        atomic_write_text(self.config_file, to_yaml(config))

    def read_config(self) -> TrialConfig:
        if not self.config_file.exists():
            raise CheckpointError(
                f"{self.path} is not a robustlab run directory: {self.config_file.name} is missing"
            )
        return load_trial(self.config_file)

    def append_metrics(self, record: dict[str, Any]) -> None:
        append_line(self.metrics_file, json.dumps(record, sort_keys=True))

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete records; a half-written last line (killed mid-write) is ignored."""
        if not self.metrics_file.exists():
            return []
        records = []
        for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_metrics(self, global_epoch: int) -> None:
        """Drop epoch records past ``global_epoch``: they will be recomputed on resume."""
        kept = [
            record
            for record in self.read_metrics()
            if record.get("global_epoch", 0) <= global_epoch
        ]
        lines = "".join(json.dumps(record, sort_keys=True) + "\n" for record in kept)
        atomic_write_text(self.metrics_file, lines)

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_json(self.results_file, results)

    def read_results(self) -> dict[str, Any]:
        if not self.results_file.exists():
            raise CheckpointError(f"run {self.path} has not finished: no {self.results_file.name}")
        data: dict[str, Any] = json.loads(self.results_file.read_text(encoding="utf-8"))
        return data


def _what(path: Path) -> str:
    return "checkpoint" if path.suffix == ".pt" else "weights file"


def comparable_config(config: TrialConfig) -> dict[str, Any]:
    """What must match for a run to be continued or counted as done: everything but where
    the data lives and which device runs it, which may change between sessions."""
    dumped = config.model_dump(mode="json")
    dumped["data"].pop("root", None)
    dumped["data"].pop("fallback", None)
    dumped.pop("device", None)
    return dumped
