"""An experiment expanded once into a plan: its kind, the kind's report options, every trial
(``TrialSpec``, from ``robustlab.config``) and what each costs.

Building the plan is the last check before any work: the kind must exist and accept the
experiment, every trial's config must validate, and every distinct model must build for its
dataset (a bad option in one sweep point fails here, naming the trial), and every attack's
budget must fit that dataset's inputs (an L2 ε above √d is caught here, not at the first
batch after the trial's folder was claimed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from robustlab.config import (
    ExperimentConfig,
    TrialConfig,
    TrialSpec,
    expand_trials,
    format_validation_error,
)
from robustlab.config.objectives import training_attack
from robustlab.data import dataset_info
from robustlab.errors import ConfigError, RobustlabError
from robustlab.experiments.kinds import KINDS, ExperimentKind
from robustlab.models import count_multiply_adds, count_parameters
from robustlab.registry import UnknownNameError
from robustlab.store.loading import build_for_dataset
from robustlab.train.inputs import choose_dataset


@dataclass(frozen=True)
class ModelFacts:
    """What a trial's architecture costs: parameters and multiply-adds per image."""

    parameters: int
    multiply_adds: int


@dataclass(frozen=True)
class Plan:
    config: ExperimentConfig
    kind: ExperimentKind
    options: Any
    """The kind's ``report:`` options, validated by its schema."""
    trials: tuple[TrialSpec, ...]
    facts: dict[str, ModelFacts]
    """Trial name → its model's size."""

    @property
    def needs_calibration(self) -> bool:
        return any(spec.needs_calibration for spec in self.trials)

    def trial(self, name: str) -> TrialSpec:
        for spec in self.trials:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def cost(self, spec: TrialSpec) -> float:
        """Multiply-adds per image × epochs: enough to start the longest trials first."""
        return float(self.facts[spec.name].multiply_adds * spec.base.total_epochs)


def build_plan(config: ExperimentConfig) -> Plan:
    try:
        kind = KINDS.get(config.kind)
    except UnknownNameError as error:
        raise ConfigError(f"kind: {error}") from None
    try:
        options = kind.options.model_validate(config.report)
    except ValidationError as error:
        message = format_validation_error(error, f"{config.name}'s report options")
        raise ConfigError(message.replace("\n  ", "\n  report.")) from None
    specs = tuple(expand_trials(config))
    try:
        kind.check(config, options, specs)
    except ValueError as error:
        raise ConfigError(f"experiment {config.name!r} ({kind.name}): {error}") from None
    return Plan(config, kind, options, specs, _model_facts(specs))


def _model_facts(specs: tuple[TrialSpec, ...]) -> dict[str, ModelFacts]:
    """Build every distinct architecture once (on the CPU) for its dataset."""
    built: dict[str, ModelFacts] = {}
    facts = {}
    for spec in specs:
        dataset = choose_dataset(spec.base.data)
        model = spec.base.model
        key = json.dumps([dataset, model.name, model.options], sort_keys=True, default=str)
        if key not in built:
            try:
                info = dataset_info(dataset)
                network = build_for_dataset(model, info)
                built[key] = ModelFacts(
                    parameters=count_parameters(network),
                    multiply_adds=count_multiply_adds(network, info.input_shape),
                )
            except RobustlabError as error:
                raise ConfigError(f"trial {spec.name}: {error}") from None
        if not spec.needs_calibration:  # a calibrated ε is found below 1, in L∞
            _check_budgets(spec.name, spec.resolve(), dataset_info(dataset).input_shape)
        facts[spec.name] = built[key]
    return facts


def _check_budgets(name: str, trial: TrialConfig, input_shape: tuple[int, ...]) -> None:
    """Every attack of the trial (per epoch, phase end, training) against its input's box."""
    for phase in trial.phases:
        attacks = [*trial.phase_attacks(phase), *trial.phase_end_attacks(phase)]
        trained_against = training_attack(phase.objective)
        if trained_against is not None:
            attacks.append(trained_against)
        evaluated = [*trial.phase_attacks(phase), *trial.phase_end_attacks(phase)]
        for attack in evaluated:
            if attack.build().targeted_only:
                raise ConfigError(
                    f"trial {name}, phase {phase.name!r}: attack {attack.name!r} is targeted "
                    "only; evaluations measure untargeted robust accuracy"
                )
        for attack in attacks:
            try:
                attack.build().check_budget(input_shape)
            except RobustlabError as error:
                raise ConfigError(f"trial {name}, phase {phase.name!r}: {error}") from None
