"""What a capacity search measures: the distinct architectures of a run, an experiment folder
or an experiment config (seeds and sweep points that only change training are one target)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from robustlab.config import ExperimentConfig, ModelConfig, PhaseConfig, load_experiment
from robustlab.errors import ConfigError
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.runs import RunDirectory


@dataclass(frozen=True)
class Target:
    """One architecture on one dataset."""

    model: ModelConfig
    dataset: str
    data_root: Path | None
    device: str
    eps: float | None
    """The threat's ε: the robust measure's default attack budget."""

    @property
    def label(self) -> str:
        options = " ".join(f"{key}={value}" for key, value in sorted(self.model.options.items()))
        return f"{self.model.name} {options}".strip()

    def key(self) -> str:
        return json.dumps(
            {"model": self.model.name, "options": self.model.options, "dataset": self.dataset},
            sort_keys=True,
        )


@dataclass(frozen=True)
class Targets:
    targets: list[Target]
    folder: Path
    """Where the results go: the run's or the experiment's folder."""


def find_targets(source: Path, out: Path) -> Targets:
    """The architectures behind ``source``: a run folder (``config.yaml``), an experiment
    folder (``experiment.yaml``) or an experiment YAML file (results under ``out/NAME``)."""
    if source.is_file():
        config = load_experiment(source)
        return Targets(_from_experiment(config), out / config.name)
    if (source / "config.yaml").is_file():
        trial = RunDirectory(source).read_config()
        eps = _eps(trial.phases)
        target = Target(trial.model, trial.data.dataset, trial.data.root, trial.device, eps)
        return Targets([_bare(target)], source)
    folder = ExperimentDirectory(source)
    if folder.config_file.is_file():
        return Targets(_from_experiment(folder.read_config()), source)
    raise ConfigError(
        f"{source}: not a run folder (config.yaml), an experiment folder (experiment.yaml) "
        "or an experiment config file"
    )


def _from_experiment(config: ExperimentConfig) -> list[Target]:
    from robustlab.config import expand_trials

    found: dict[str, Target] = {}
    for spec in expand_trials(config):
        if spec.needs_calibration:
            raise ConfigError(
                f"trial {spec.name}: a calibrated ε is only known after the experiment ran; "
                "measure capacity on its experiment folder instead"
            )
        trial = spec.resolve()
        eps = _eps(trial.phases)
        target = _bare(Target(trial.model, trial.data.dataset, trial.data.root, trial.device, eps))
        found.setdefault(target.key(), target)
    return list(found.values())


def _bare(target: Target) -> Target:
    """The architecture alone: defenses wrap a trained model, they hold no capacity."""
    model = ModelConfig(name=target.model.name, options=dict(target.model.options))
    return Target(model, target.dataset, target.data_root, target.device, target.eps)


def _eps(phases: list[PhaseConfig]) -> float | None:
    """The ε of the last phase that trains against an attack with a fixed budget."""
    for phase in reversed(phases):
        eps = None if phase.attack is None else phase.attack.params.get("eps")
        if isinstance(eps, int | float):
            return float(eps)
    return None
