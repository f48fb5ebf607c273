"""Pydantic schemas for everything a run reads from YAML or the command line.

Configs are validated once, at the edge: an unknown key, a wrong type or an out-of-range value
fails before any work starts, with the dotted path of the field in the message. Inside the
package, code takes these typed objects, never raw dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robustlab.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class StrictModel(BaseModel):
    """Base for every schema: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(StrictModel):
    dataset: str = Field(description="registry name, e.g. mnist, fashion-mnist, digits")
    fallback: list[str] = Field(
        default_factory=list,
        description="datasets to use, in order, when the primary one's files are absent",
    )
    root: Path | None = Field(default=None, description="data root; else $ROBUSTLAB_DATA")


class ModelConfig(StrictModel):
    name: str = Field(description="model registry name, e.g. thesis-shallow")
    options: dict[str, Any] = Field(default_factory=dict, description="builder options")


class OptimizerConfig(StrictModel):
    type: Literal["sgd", "adam", "adamw"] = "adam"
    lr: Annotated[float, Field(gt=0, le=10)] = 1e-3
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0, lt=1)] = 0.0

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerConfig:
        if self.nesterov and (self.type != "sgd" or self.momentum == 0):
            raise ValueError("nesterov=true needs type=sgd and momentum > 0")
        return self


class ScheduleConfig(StrictModel):
    """Learning-rate schedule over one phase, evaluated per batch."""

    type: Literal["constant", "cosine", "step", "multistep", "cyclic"] = "constant"
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    step_size: Annotated[int, Field(ge=1)] = 1
    milestones: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    peak_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.4
    final_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0


class StandardObjectiveConfig(StrictModel):
    """Plain cross-entropy on clean inputs."""

    type: Literal["standard"] = "standard"
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0


# Adversarial objectives join this union as further members with their own ``type`` literal.
ObjectiveConfig = StandardObjectiveConfig


class PhaseConfig(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    epochs: Annotated[int, Field(ge=1, le=10_000)]
    objective: ObjectiveConfig = Field(default_factory=StandardObjectiveConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 128
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32", description="bf16 runs forward/backward under torch.autocast"
    )
    max_grad_norm: Annotated[float, Field(gt=0)] | None = None

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value


class EvaluationConfig(StrictModel):
    batch_size: Annotated[int, Field(ge=1)] = 1000
    train_subset: Annotated[int, Field(ge=0)] | None = Field(
        default=10_000,
        description="training images scored in eval mode each epoch; 0 = none, null = all",
    )


class TrialConfig(StrictModel):
    """One model trained with one seed through all phases: what a run directory holds."""

    experiment: str = Field(default="train", pattern=NAME_PATTERN)
    trial: str = Field(pattern=NAME_PATTERN)
    data: DataConfig
    model: ModelConfig
    seed: Annotated[int, Field(ge=0, lt=2**31)] = 0
    phases: list[PhaseConfig] = Field(min_length=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")

    @field_validator("phases")
    @classmethod
    def _unique_phase_names(cls, phases: list[PhaseConfig]) -> list[PhaseConfig]:
        names = [phase.name for phase in phases]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"phase names must be unique; repeated: {', '.join(duplicates)}")
        return phases

    @property
    def total_epochs(self) -> int:
        return sum(phase.epochs for phase in self.phases)


class ExperimentConfig(StrictModel):
    """Models × seeds, each trained through the same phases; one trial per pair."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    data: DataConfig
    models: list[ModelConfig] = Field(min_length=1)
    seeds: list[Annotated[int, Field(ge=0, lt=2**31)]] = Field(default_factory=lambda: [0])
    phases: list[PhaseConfig] = Field(min_length=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    device: str = "auto"

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be unique")
        return seeds

    def trials(self) -> list[TrialConfig]:
        """Expand into trial configs; names are ``<model>-s<seed>`` and must be unique."""
        trials = []
        for model in self.models:
            for seed in self.seeds:
                trials.append(
                    TrialConfig(
                        experiment=self.name,
                        trial=f"{model.name}-s{seed}",
                        data=self.data,
                        model=model,
                        seed=seed,
                        phases=self.phases,
                        evaluation=self.evaluation,
                        device=self.device,
                    )
                )
        names = [trial.trial for trial in trials]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"experiment {self.name!r}: models list the same model twice; trial names "
                f"must be unique, got {names}"
            )
        return trials


def parse_config(schema: type[StrictModel], data: Any, *, source: str) -> Any:
    """Validate ``data`` against ``schema``; turn pydantic's report into one ConfigError."""
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for issue in error.errors():
        field = ".".join(str(part) for part in issue["loc"]) or "(top level)"
        if issue["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see configs/ for examples)"
        else:
            message = issue["msg"]
        given = issue.get("input")
        shown = "" if issue["type"] == "missing" or isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  {field}: {message}{shown}")
    return "\n".join(lines)


def load_yaml(path: str | Path) -> Any:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except OSError as error:
        raise ConfigError(f"config file {file} cannot be read: {error}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {file} is not valid YAML: {error}") from None


def load_experiment(path: str | Path) -> ExperimentConfig:
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    config: ExperimentConfig = parse_config(ExperimentConfig, data, source=str(path))
    return config


def load_trial(path: str | Path) -> TrialConfig:
    config: TrialConfig = parse_config(TrialConfig, load_yaml(path), source=str(path))
    return config


def to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
