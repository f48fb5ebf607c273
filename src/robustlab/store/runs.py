"""The layout of a run directory, in one place.

``<run>/config.yaml``         the resolved trial config (what actually ran)
``<run>/metrics.jsonl``       one JSON line per epoch or evaluation
``<run>/checkpoints/last.pt`` full training state after the last completed epoch
``<run>/checkpoints/phase-<name>.safetensors``  weights at the end of each phase
``<run>/model.safetensors``   final weights
``<run>/results.json``        final metrics, wall time and provenance; present = finished
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab.config import TrialConfig, load_trial, to_yaml
from robustlab.errors import CheckpointError
from robustlab.io import append_line, atomic_write_json, atomic_write_text


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


def comparable_config(config: TrialConfig) -> dict[str, Any]:
    """What must match for a run to be continued or counted as done: everything but where
    the data lives and which device runs it, which may change between sessions."""
    dumped = config.model_dump(mode="json")
    dumped["data"].pop("root", None)
    dumped["data"].pop("fallback", None)
    dumped.pop("device", None)
    return dumped
