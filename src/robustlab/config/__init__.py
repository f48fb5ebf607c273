"""Pydantic schemas for everything a run reads from YAML or the command line.

Configs are validated once, at the edge: an unknown key, a wrong type or an out-of-range value
fails before any work starts, with the dotted path of the field in the message. Inside the
package, code takes these typed objects, never raw dicts. Modules: ``base`` (strictness,
budgets), ``threat`` (the experiment's ε), ``attacks``, ``objectives``, ``trial`` (a run
directory's config), ``sweep``, ``experiment`` and ``loading``. This package imports only
``errors`` and, lazily, the attack registry (an attack validates by building).
"""

from __future__ import annotations

from pathlib import Path

from robustlab.config.attacks import AttackConfig, pgd_config
from robustlab.config.base import NAME_PATTERN, Budget, StrictModel
from robustlab.config.experiment import (
    CalibrationConfig,
    ExecutorConfig,
    ExperimentConfig,
    TrialSpec,
    expand_trials,
)
from robustlab.config.loading import (
    format_validation_error,
    load_mapping,
    load_yaml,
    parse_config,
    to_yaml,
)
from robustlab.config.objectives import ObjectiveConfig, StandardObjectiveConfig
from robustlab.config.sweep import SweepConfig, SweepPoint
from robustlab.config.threat import CALIBRATED, Calibrated, Threat, ThreatConfig
from robustlab.config.trial import (
    AugmentConfig,
    DataConfig,
    EvaluationConfig,
    ModelConfig,
    OptimizerConfig,
    PhaseConfig,
    PhaseEvaluationConfig,
    ScheduleConfig,
    TrialConfig,
    default_epoch_attacks,
)

__all__ = [
    "CALIBRATED",
    "NAME_PATTERN",
    "AttackConfig",
    "AugmentConfig",
    "Budget",
    "Calibrated",
    "CalibrationConfig",
    "DataConfig",
    "EvaluationConfig",
    "ExecutorConfig",
    "ExperimentConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimizerConfig",
    "PhaseConfig",
    "PhaseEvaluationConfig",
    "ScheduleConfig",
    "StandardObjectiveConfig",
    "StrictModel",
    "SweepConfig",
    "SweepPoint",
    "Threat",
    "ThreatConfig",
    "TrialConfig",
    "TrialSpec",
    "default_epoch_attacks",
    "expand_trials",
    "format_validation_error",
    "load_experiment",
    "load_mapping",
    "load_trial",
    "load_yaml",
    "parse_config",
    "pgd_config",
    "to_yaml",
]


def load_experiment(path: str | Path) -> ExperimentConfig:
    return parse_config(ExperimentConfig, load_mapping(path), source=str(path))


def load_trial(path: str | Path) -> TrialConfig:
    return parse_config(TrialConfig, load_yaml(path), source=str(path))
