"""Read an experiment folder back into numbers: one ``TrialSummary`` per finished trial.

Everything comes from what the runs wrote (``config.yaml``, ``metrics.jsonl``,
``results.json``), so a report can be rebuilt at any time without the models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab.config import ExperimentConfig, load_experiment
from robustlab.errors import ConfigError
from robustlab.experiments.runner import EXPERIMENT_FILE, SUMMARY_FILE
from robustlab.store.runs import RunDirectory


@dataclass(frozen=True)
class PhaseNumbers:
    """A phase's last epoch and its end-of-phase evaluation."""

    phase: str
    train_acc: float | None
    """Clean accuracy on the training subset, in eval mode."""
    running_train_acc: float
    """Accuracy during the last epoch's training steps: on the training attack's examples
    for adversarial phases, with dropout active."""
    test_acc: float
    evaluation: dict[str, Any] | None
    """The ``phase_end`` record: robust accuracy per attack, worst case, PGD traces."""

    def attack(self, prefix: str | None) -> tuple[str, dict[str, Any]] | None:
        """The phase-end attack whose label starts with ``prefix`` (default: the first)."""
        if self.evaluation is None or not self.evaluation["attacks"]:
            return None
        attacks = self.evaluation["attacks"]
        for name in self.evaluation.get("order", sorted(attacks)):
            if prefix is None or name.startswith(prefix):
                return name, attacks[name]
        return None

    def attack_names(self) -> list[str]:
        """Phase-end attack labels in the order the config lists them."""
        if self.evaluation is None:
            return []
        return list(self.evaluation.get("order", sorted(self.evaluation["attacks"])))


@dataclass(frozen=True)
class TrialSummary:
    trial: str
    model: str
    setting: str | None
    seed: int
    parameters: int
    train_seconds: float
    epochs: list[dict[str, Any]]
    phases: dict[str, PhaseNumbers]
    phase_order: list[str]
    early_stops: list[dict[str, Any]]


@dataclass(frozen=True)
class ExperimentData:
    directory: Path
    config: ExperimentConfig
    trials: list[TrialSummary]
    calibration: dict[str, Any] | None
    missing: list[str]
    """Trials of the config that have not finished (left out of the report)."""

    def models(self) -> list[str]:
        return [model.display_name for model in self.config.models]

    def settings(self) -> list[str | None]:
        return [setting.name for setting in self.config.settings] or [None]

    def group(self, setting: str | None, model: str) -> list[TrialSummary]:
        return [t for t in self.trials if t.setting == setting and t.model == model]


def collect(directory: Path) -> ExperimentData:
    saved = directory / EXPERIMENT_FILE
    if not saved.exists():
        raise ConfigError(
            f"{directory} is not an experiment folder: {EXPERIMENT_FILE} is missing "
            "(run `robustlab run CONFIG` first)"
        )
    config = load_experiment(saved)
    calibration = _calibration(directory)
    eps = calibration["eps"] if calibration is not None else None
    trials, missing = [], []
    for trial in config.trials(eps):
        run = RunDirectory(directory / trial.trial)
        if not run.is_finished:
            missing.append(trial.trial)
            continue
        trials.append(_summarise(run, trial.model.display_name, trial.setting))
    return ExperimentData(directory, config, trials, calibration, missing)


def _calibration(directory: Path) -> dict[str, Any] | None:
    summary = directory / SUMMARY_FILE
    if summary.exists():
        calibration: dict[str, Any] | None = json.loads(summary.read_text())["calibration"]
        return calibration
    saved = directory / "calibration.json"
    if saved.exists():
        data: dict[str, Any] = json.loads(saved.read_text())
        return data
    return None


def _summarise(run: RunDirectory, model: str, setting: str | None) -> TrialSummary:
    results = run.read_results()
    config = run.read_config()
    records = run.read_metrics()
    epochs = [record for record in records if record.get("event") == "epoch"]
    ends = {record["phase"]: record for record in records if record.get("event") == "phase_end"}
    phases = {}
    for phase in config.phases:
        last = [record for record in epochs if record["phase"] == phase.name]
        if not last:
            continue
        final = last[-1]
        phases[phase.name] = PhaseNumbers(
            phase=phase.name,
            train_acc=final.get("train_eval_acc"),
            running_train_acc=final["train_acc"],
            test_acc=final["test_acc"],
            evaluation=ends.get(phase.name),
        )
    return TrialSummary(
        trial=config.trial,
        model=model,
        setting=setting,
        seed=config.seed,
        parameters=int(results["parameters"]),
        train_seconds=float(results["train_seconds"]),
        epochs=epochs,
        phases=phases,
        phase_order=[phase.name for phase in config.phases],
        early_stops=[record for record in records if record.get("event") == "early_stop"],
    )
