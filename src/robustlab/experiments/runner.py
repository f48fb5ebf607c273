"""Run every trial of an experiment; re-running skips finished trials and resumes the rest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab.config import ExperimentConfig, load_experiment, to_yaml
from robustlab.errors import ConfigError
from robustlab.io import atomic_write_json, atomic_write_text
from robustlab.provenance import provenance
from robustlab.runs import RunDirectory
from robustlab.train.trainer import TrainingReporter, train_trial


@dataclass(frozen=True)
class ExperimentResult:
    directory: Path
    trials: list[dict[str, Any]]
    """Each trial's results.json content."""


def run_experiment(
    config: ExperimentConfig, out_dir: str | Path, *, reporter: TrainingReporter | None = None
) -> ExperimentResult:
    directory = Path(out_dir) / config.name
    saved = directory / "experiment.yaml"
    if saved.exists():
        previous = load_experiment(saved)
        if _identity(previous) != _identity(config):
            raise ConfigError(
                f"{directory} holds experiment {config.name!r} run with a different config "
                f"({saved}); rename the experiment (name:) or choose another output directory"
            )
    atomic_write_text(saved, to_yaml(config))
    results = []
    for trial in config.trials():
        run = RunDirectory(directory / trial.trial)
        train_trial(trial, run.path, resume=True, reporter=reporter)
        results.append(run.read_results())
    atomic_write_json(directory / "summary.json", {"trials": results, "provenance": provenance()})
    return ExperimentResult(directory=directory, trials=results)


def _identity(config: ExperimentConfig) -> dict[str, Any]:
    """What defines the experiment's results: everything but where data lives and the device."""
    dumped = config.model_dump(mode="json")
    dumped["data"].pop("root", None)
    dumped.pop("device", None)
    return dumped
