"""Run every trial of an experiment; re-running skips finished trials and resumes the rest.

Order: (1) every trial's shared phases, trained once per distinct prefix; (2) the calibration,
if a setting trains at the "calibrated" ε; (3) each trial, started from its shared prefix;
(4) ``summary.json`` and the report. Each step is on disk before the next starts, so an
interrupted run picks up where it stopped. Steps (1) and (3) run ``config.jobs`` trials side
by side (``robustlab.experiments.parallel``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from robustlab.config import (
    STAND_IN_EPS,
    ExperimentConfig,
    TrialConfig,
    load_experiment,
    to_yaml,
)
from robustlab.data import dataset_info
from robustlab.errors import ConfigError
from robustlab.experiments.calibrating import calibrate_experiment
from robustlab.experiments.parallel import Job, run_jobs
from robustlab.experiments.shared import resolved, shared_prefix, shared_run, start_from_shared
from robustlab.io import atomic_write_json, atomic_write_text
from robustlab.models import count_multiply_adds
from robustlab.provenance import provenance
from robustlab.store.loading import build_for_dataset
from robustlab.store.runs import RunDirectory
from robustlab.train.trainer import TrainingReporter, train_trial

EXPERIMENT_FILE = "experiment.yaml"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class ExperimentResult:
    directory: Path
    trials: list[dict[str, Any]]
    """Each trial's results.json content."""
    report: Path | None = None


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    reporter: TrainingReporter | None = None,
    write_report: bool = True,
) -> ExperimentResult:
    out = Path(out_dir)
    directory = out / config.name
    _claim_directory(config, directory)

    provisional = config.trials()
    _check_calibration_leaves_shared_phases_alone(config)
    reporter = reporter or TrainingReporter()
    prefixes = {
        prefix.trial: prefix
        for trial in provisional
        if (prefix := shared_prefix(trial)) is not None
    }
    shared = list(prefixes.values())
    run_jobs(
        [
            Job(prefix.trial, partial(_train_shared, prefix, out), cost)
            for prefix, cost in zip(shared, _costs(shared, config.jobs), strict=True)
        ],
        config.jobs,
        reporter,
    )

    calibration = None
    if config.calibration is not None:
        reporter.status("calibrating ε on the standard-trained models")
        calibration = calibrate_experiment(config.calibration, provisional, out, directory)
        reporter.status(
            f"calibrated ε* = {calibration['eps']:.4f} ({calibration['attack']}, "
            f"{calibration['target_success']:.0%} success)"
        )
    trials = config.trials(calibration["eps"] if calibration is not None else None)

    results = run_jobs(
        [
            Job(trial.trial, partial(_train_trial, trial, out, directory), cost)
            for trial, cost in zip(trials, _costs(trials, config.jobs), strict=True)
        ],
        config.jobs,
        reporter,
    )
    atomic_write_json(
        directory / SUMMARY_FILE,
        {"trials": results, "calibration": calibration, "provenance": provenance()},
    )
    report = None
    if write_report:
        from robustlab.experiments.report import write_experiment_report

        report = write_experiment_report(directory)
    return ExperimentResult(directory=directory, trials=results, report=report)


def _train_shared(prefix: TrialConfig, out: Path, reporter: TrainingReporter) -> None:
    train_trial(prefix, shared_run(out, prefix).path, resume=True, reporter=reporter)


def _train_trial(
    trial: TrialConfig, out: Path, directory: Path, reporter: TrainingReporter
) -> dict[str, Any]:
    """The trial, started from its shared phases' run; its results.json content."""
    run = RunDirectory(directory / trial.trial)
    prefix = shared_prefix(trial)
    if prefix is not None and not run.has_started:
        start_from_shared(shared_run(out, prefix), trial, run, reporter)
    train_trial(trial, run.path, resume=True, reporter=reporter)
    return run.read_results()


def _costs(trials: list[TrialConfig], jobs: int) -> list[float]:
    """Multiply-adds per image × epochs, enough to start the longest trials first: one model
    built per distinct architecture, none when the trials run one at a time (no order to
    choose)."""
    if jobs <= 1:
        return [0.0] * len(trials)
    per_image: dict[str, int] = {}
    costs = []
    for trial in trials:
        dataset = resolved(trial).data.dataset
        key = json.dumps([dataset, trial.model.name, trial.model.options], default=str)
        if key not in per_image:
            info = dataset_info(dataset)
            model = build_for_dataset(trial.model, info)
            per_image[key] = count_multiply_adds(model, info.input_shape)
        costs.append(float(per_image[key] * trial.total_epochs))
    return costs


def _claim_directory(config: ExperimentConfig, directory: Path) -> None:
    """Refuse to mix two different experiments under one name; record the config."""
    saved = directory / EXPERIMENT_FILE
    if saved.exists():
        previous = load_experiment(saved)
        if _identity(previous) != _identity(config):
            raise ConfigError(
                f"{directory} holds experiment {config.name!r} run with a different config "
                f"({saved}); rename the experiment (name:) or choose another output directory"
            )
    atomic_write_text(saved, to_yaml(config))


def _check_calibration_leaves_shared_phases_alone(config: ExperimentConfig) -> None:
    """The shared phases are trained before calibration, so "calibrated" must not reach them."""
    if not config.uses_calibration:
        return
    first = [_prefix_name(trial) for trial in config.trials(STAND_IN_EPS)]
    second = [_prefix_name(trial) for trial in config.trials(2 * STAND_IN_EPS)]
    if first != second:
        raise ConfigError(
            f"experiment {config.name!r}: a setting puts the calibrated ε into a shared phase; "
            "calibration runs after the shared phases, so only later phases can use it"
        )


def _prefix_name(trial: TrialConfig) -> str | None:
    prefix = shared_prefix(trial)
    return None if prefix is None else prefix.trial


def _identity(config: ExperimentConfig) -> dict[str, Any]:
    """What defines the experiment's results: everything but where data lives and the device."""
    dumped = config.model_dump(mode="json")
    dumped["data"].pop("root", None)
    dumped.pop("device", None)
    dumped.pop("jobs", None)  # how many run at once; each run records its thread count
    dumped.pop("report", None)
    return dumped
