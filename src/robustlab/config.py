"""Pydantic schemas for everything a run reads from YAML or the command line.

Configs are validated once, at the edge: an unknown key, a wrong type or an out-of-range value
fails before any work starts, with the dotted path of the field in the message. Inside the
package, code takes these typed objects, never raw dicts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from robustlab.config_base import StrictModel
from robustlab.config_objectives import (
    AttackConfig,
    ObjectiveConfig,
    StandardObjectiveConfig,
    training_attack,
)

__all__ = ["AttackConfig", "ObjectiveConfig", "StandardObjectiveConfig"]  # re-exported

from robustlab.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


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
    label: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="name in trial names and reports (default: name); tells apart two "
        "entries of one model with different options",
    )

    @property
    def display_name(self) -> str:
        return self.label or self.name


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


class PhaseEvaluationConfig(StrictModel):
    """Per-phase replacements for the experiment's attack lists (None: use the experiment's)."""

    attacks: list[AttackConfig] | None = None
    phase_end_attacks: list[AttackConfig] | None = None


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
    evaluation: PhaseEvaluationConfig = Field(default_factory=PhaseEvaluationConfig)
    shared: bool = Field(
        default=False,
        description="train once and reuse wherever the same data, model, seed, evaluation and "
        "preceding phases recur (also across experiments in one output folder)",
    )

    @property
    def attack(self) -> AttackConfig | None:
        """The attack this phase trains against, if its objective is adversarial."""
        return training_attack(self.objective)

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value


class EvaluationConfig(StrictModel):
    """What is measured after every epoch and at the end of every phase."""

    batch_size: Annotated[int, Field(ge=1)] = 1000
    train_subset: Annotated[int, Field(ge=0)] | None = Field(
        default=10_000,
        description="training images scored in eval mode each epoch; 0 = none, null = all",
    )
    attack_images: Annotated[int, Field(ge=1)] = Field(
        default=1000, description="the first N test images are attacked (the same every time)"
    )
    attack_batch_size: Annotated[int, Field(ge=1)] = 500
    attacks: list[AttackConfig] | None = Field(
        default=None,
        description="attacks run after every epoch; null: in adversarial phases the phase's "
        "attack and PGD with more steps at its ε, in standard phases none",
    )
    phase_end_attacks: list[AttackConfig] = Field(
        default_factory=list,
        description="attacks run on the weights at the end of every phase (the strong "
        "evaluation: e.g. PGD-200 and AutoAttack); PGD's success is traced per iteration",
    )

    def global_knobs(self) -> dict[str, Any]:
        """Everything but the attack lists, which phases may replace."""
        return self.model_dump(mode="json", exclude={"attacks", "phase_end_attacks"})


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
    setting: str | None = Field(default=None, description="the experiment setting, if any")

    @field_validator("phases")
    @classmethod
    def _unique_phase_names(cls, phases: list[PhaseConfig]) -> list[PhaseConfig]:
        names = [phase.name for phase in phases]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"phase names must be unique; repeated: {', '.join(duplicates)}")
        flags = [phase.shared for phase in phases]
        if flags != sorted(flags, reverse=True):
            raise ValueError(
                "shared phases must come first: a shared phase cannot follow one that is not shared"
            )
        return phases

    def phase_attacks(self, phase: PhaseConfig) -> list[AttackConfig]:
        """Attacks run after every epoch of ``phase``."""
        if phase.evaluation.attacks is not None:
            return phase.evaluation.attacks
        if self.evaluation.attacks is not None:
            return self.evaluation.attacks
        return default_epoch_attacks(phase)

    def phase_end_attacks(self, phase: PhaseConfig) -> list[AttackConfig]:
        """Attacks run on the weights at the end of ``phase``."""
        if phase.evaluation.phase_end_attacks is not None:
            return phase.evaluation.phase_end_attacks
        return self.evaluation.phase_end_attacks

    @property
    def total_epochs(self) -> int:
        return sum(phase.epochs for phase in self.phases)


class HypothesisConfig(StrictModel):
    """The thesis's Hypothesis 1: the deeper model keeps more clean accuracy under
    adversarial training. Names are model labels (or names) of the experiment."""

    shallow: str = "thesis-shallow"
    deep: str = "thesis-deep"


class ReportConfig(StrictModel):
    """How ``robustlab report`` reads the experiment: which phases are "before" and "after"
    (Table 5.1's columns) and which published numbers to print beside ours."""

    title: str = ""
    before_phase: str | None = Field(default=None, description="default: the first phase")
    after_phase: str | None = Field(default=None, description="default: the last phase")
    adversary: str | None = Field(
        default=None,
        description="label (or its start) of the phase-end attack whose success rate is "
        "'the adversary's'; default: the first phase-end attack",
    )
    hypothesis: HypothesisConfig | None = None
    reference: Literal["thesis-table-5-1", "none"] = "none"
    notes: str = Field(default="", description="printed under the title, e.g. the protocol")


def default_epoch_attacks(phase: PhaseConfig) -> list[AttackConfig]:
    """The phase's own attack, and PGD with more steps at its ε (none for standard phases)."""
    attack = phase.attack
    if attack is None:
        return []
    eps = attack.build().budget
    if eps is None:
        return [attack]
    steps = max(50, 4 * int(attack.params.get("steps", 1)))
    stronger = AttackConfig.model_validate(
        {"name": "pgd", "eps": eps, "steps": steps, "norm": attack.build().threat}
    )
    return [attack, stronger]


CALIBRATED = "calibrated"
"""A setting's override value that stands for the experiment's calibrated ε."""
STAND_IN_EPS = 0.1
"""Used in place of the calibrated ε to validate settings before calibration has run."""


class CalibrationConfig(StrictModel):
    """Find the ε at which the attack fools ``target_success`` of the models' clean-correct
    test images, on the weights at the end of ``after_phase`` (a shared phase, so the
    calibration runs before any setting needs it). Settings use it by the value "calibrated".
    """

    target_success: Annotated[float, Field(gt=0, lt=1)] = 0.56
    after_phase: str = Field(description="a shared phase, e.g. the standard-training phase")
    attack: AttackConfig = Field(
        default_factory=lambda: AttackConfig.model_validate(
            {"name": "pgd", "eps": 1.0, "steps": 200, "early_stop": True}
        ),
        description="a PGD-family attack; its eps only sets the ratio alpha/eps",
    )
    seeds: list[int] | None = Field(default=None, description="models of these seeds; null: all")
    images: Annotated[int, Field(ge=1)] = 1000
    high: Annotated[float, Field(gt=0, le=1)] = 0.5
    iterations: Annotated[int, Field(ge=1, le=20)] = 7
    batch_size: Annotated[int, Field(ge=1)] = 500
    refine: Literal["all", "target"] = Field(
        default="target",
        description="halve every example's bracket (a sharp curve at every ε), or only those "
        "that can still move the ε at the target (the same ε, about half the attack calls)",
    )


class SettingConfig(StrictModel):
    """One variant of an experiment: dotted paths into its ``phases`` or ``evaluation`` mapped
    to new values, e.g. ``{phases.1.objective.attack.eps: 0.3}``."""

    name: str = Field(pattern=NAME_PATTERN)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _paths_under_phases_or_evaluation(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        for path in overrides:
            if path.split(".")[0] not in OVERRIDABLE:
                raise ValueError(
                    f"{path!r}: a setting may change only fields under {' or '.join(OVERRIDABLE)}"
                )
        return overrides


OVERRIDABLE = ("phases", "evaluation")


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with each dotted path set; a path that does not exist is an error."""
    result = copy.deepcopy(data)
    for path, value in overrides.items():
        parts = path.split(".")
        node: Any = result
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth]) or "(top level)"
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ValueError(f"{path!r}: {where} has no item {part!r}")
                key: Any = int(part)
            elif isinstance(node, dict):
                if part not in node and not (last and _accepts_new_keys(node)):
                    raise ValueError(f"{path!r}: {where} has no field {part!r}")
                key = part
            else:
                raise ValueError(f"{path!r}: {where} is a value, not a mapping or list")
            if last:
                node[key] = value
            else:
                node = node[key]
    return result


def _accepts_new_keys(node: dict[str, Any]) -> bool:
    """Attack configs take any of their attack's parameters, not only those already written."""
    return "name" in node and not {"epochs", "dataset"} & set(node)


class ExperimentConfig(StrictModel):
    """Models × settings × seeds, each trained through the phases; one trial per triple."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    data: DataConfig
    models: list[ModelConfig] = Field(min_length=1)
    seeds: list[Annotated[int, Field(ge=0, lt=2**31)]] = Field(default_factory=lambda: [0])
    phases: list[PhaseConfig] = Field(min_length=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    settings: list[SettingConfig] = Field(
        default_factory=list, description="variants of the phases or evaluation, e.g. one per ε"
    )
    calibration: CalibrationConfig | None = None
    device: str = "auto"
    jobs: int = Field(
        default=1,
        ge=1,
        le=64,
        description="trials trained side by side, each in a worker process with an equal "
        "share of the CPU threads (robustlab.experiments.parallel)",
    )
    report: ReportConfig = Field(default_factory=lambda: ReportConfig())

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be unique")
        return seeds

    @model_validator(mode="after")
    def _settings_apply(self) -> ExperimentConfig:
        names = [setting.name for setting in self.settings]
        if len(set(names)) != len(names):
            raise ValueError(f"settings: names must be unique, got {names}")
        for index, setting in enumerate(self.settings):
            try:
                self._variant(setting, None)
            except (ValueError, ConfigError) as error:
                raise ValueError(f"settings.{index} ({setting.name}): {error}") from None
            if self.calibration is None and CALIBRATED in setting.overrides.values():
                raise ValueError(
                    f"settings.{index} ({setting.name}) uses {CALIBRATED!r} but the "
                    "experiment has no calibration section"
                )
        if self.calibration is not None:
            shared = [phase.name for phase in self.phases if phase.shared]
            if self.calibration.after_phase not in shared:
                listed = ", ".join(shared) or "none is shared"
                raise ValueError(
                    f"calibration.after_phase must name a shared phase ({listed}), "
                    f"got {self.calibration.after_phase!r}"
                )
        return self

    @property
    def uses_calibration(self) -> bool:
        return any(CALIBRATED in setting.overrides.values() for setting in self.settings)

    def _variant(
        self, setting: SettingConfig | None, calibrated: float | None
    ) -> tuple[list[PhaseConfig], EvaluationConfig]:
        if setting is None or not setting.overrides:
            return self.phases, self.evaluation
        base = {
            "phases": [phase.model_dump(mode="json") for phase in self.phases],
            "evaluation": self.evaluation.model_dump(mode="json"),
        }
        eps = STAND_IN_EPS if calibrated is None else calibrated
        overrides = {
            path: eps if value == CALIBRATED else value for path, value in setting.overrides.items()
        }
        changed = apply_overrides(base, overrides)
        phases = [PhaseConfig.model_validate(phase) for phase in changed["phases"]]
        return phases, EvaluationConfig.model_validate(changed["evaluation"])

    def trials(self, calibrated_eps: float | None = None) -> list[TrialConfig]:
        """Expand into trial configs named ``<model>[-<setting>]-s<seed>``, which must be unique.

        ``calibrated_eps`` replaces "calibrated" in the settings (before calibration has run,
        a stand-in value does, which is good for everything but training those settings).
        """
        trials = []
        for model in self.models:
            variants: list[SettingConfig | None] = list(self.settings) or [None]
            for setting in variants:
                phases, evaluation = self._variant(setting, calibrated_eps)
                middle = f"-{setting.name}" if setting is not None else ""
                for seed in self.seeds:
                    trials.append(
                        TrialConfig(
                            experiment=self.name,
                            trial=f"{model.display_name}{middle}-s{seed}",
                            data=self.data,
                            model=model,
                            seed=seed,
                            phases=phases,
                            evaluation=evaluation,
                            device=self.device,
                            setting=setting.name if setting is not None else None,
                        )
                    )
        names = [trial.trial for trial in trials]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"experiment {self.name!r}: models list the same model twice; trial names "
                f"must be unique (give each entry a label), got {names}"
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
        if issue["type"] == "union_tag_invalid":  # name the tag field itself, e.g. .type
            field += "." + str(issue.get("ctx", {}).get("discriminator", "type")).strip("'")
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
