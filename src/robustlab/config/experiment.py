"""An experiment: models × sweep points × seeds, each a trial trained through the phases.

The experiment names its threat once (``threat: {eps: calibrated}``), may vary any per-trial
field in a sweep, and is expanded once into ``TrialSpec`` values (``expand_trials``): each
knows its name, its sweep point and its trial config with the threat still to apply, so a
calibrated ε is filled in when the calibration has run, and never guessed before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from robustlab.config.attacks import AttackConfig
from robustlab.config.base import NAME_PATTERN, StrictModel
from robustlab.config.loading import format_validation_error
from robustlab.config.sweep import SweepConfig, SweepPoint, apply_value, sweep_points
from robustlab.config.threat import Calibrated, ThreatConfig, resolve_threat
from robustlab.config.trial import (
    DataConfig,
    EvaluationConfig,
    ModelConfig,
    PhaseConfig,
    TrialConfig,
    check_phase_names,
)

RETIRED = {
    "settings": "settings and their index paths are replaced by threat (one ε that every attack "
    "inherits; `threat: {eps: calibrated}`) and sweep (variants over named fields, e.g. "
    "`sweep: {grid: {threat.eps: [8/255, calibrated]}}`); see docs/experiments.md",
}


class CalibrationConfig(StrictModel):
    """Find the ε at which the attack fools ``target_success`` of the models' clean-correct
    test images, on the weights at the end of ``after_phase`` (a shared phase, so the
    calibration runs before any trial needs it). Trials whose threat ε is ``calibrated`` use it.
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


class ExecutorConfig(StrictModel):
    """Where trials run: ``serial`` (this process), ``processes`` (workers on this machine)
    or ``ray`` (a Ray cluster; local by default). ``auto``: serial for one job, else processes."""

    type: Literal["auto", "serial", "processes", "ray"] = "auto"
    address: str | None = Field(
        default=None, description="ray only: a cluster's address (default: start a local one)"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _address_for_ray(self) -> ExecutorConfig:
        if self.address is not None and self.type != "ray":
            raise ValueError(f"address is for the ray executor, not {self.type!r}")
        return self


class ExperimentConfig(StrictModel):
    """Models × sweep points × seeds, each trained through the phases; one trial per triple."""

    name: str = Field(pattern=NAME_PATTERN)
    kind: str = Field(
        default="two-phase",
        pattern=NAME_PATTERN,
        description="experiment kind: what the report shows (robustlab kinds lists them)",
    )
    description: str = ""
    data: DataConfig
    models: list[ModelConfig] = Field(min_length=1)
    seeds: list[Annotated[int, Field(ge=0, lt=2**31)]] = Field(default_factory=lambda: [0])
    threat: ThreatConfig = Field(default_factory=ThreatConfig)
    phases: list[PhaseConfig] = Field(min_length=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    sweep: SweepConfig | None = None
    calibration: CalibrationConfig | None = None
    device: str = "auto"
    jobs: int = Field(
        default=1,
        ge=1,
        le=64,
        description="trials run side by side, each with an equal share of the CPU threads",
    )
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    report: dict[str, Any] = Field(
        default_factory=dict, description="options of the experiment kind's report"
    )

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, advice in RETIRED.items():
                if key in data:
                    raise ValueError(f"{key}: {advice}")
        return data

    @field_validator("phases")
    @classmethod
    def _unique_phase_names(cls, phases: list[PhaseConfig]) -> list[PhaseConfig]:
        check_phase_names(phases)  # here, so the error names the experiment's own field
        return phases

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be unique")
        return seeds

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.calibration is not None:
            shared = [phase.name for phase in self.phases if phase.shared]
            if self.calibration.after_phase not in shared:
                listed = ", ".join(shared) or "none is shared"
                raise ValueError(
                    f"calibration.after_phase must name a shared phase ({listed}), "
                    f"got {self.calibration.after_phase!r}"
                )
        if (
            self.sweep is not None
            and "seed" in self.sweep.grid
            and "seeds" in self.model_fields_set
        ):
            raise ValueError("seeds and sweep.grid.seed both set the seeds: keep one")
        specs = expand_trials(self)  # every trial must build: errors now, not mid-run
        if any(spec.needs_calibration for spec in specs) and self.calibration is None:
            raise ValueError(
                "threat.eps is calibrated (for some trials) but the experiment has no "
                "calibration section"
            )
        return self


@dataclass(frozen=True)
class TrialSpec:
    """One trial of the plan: its name and sweep point, and its config before the threat."""

    name: str
    model: str
    """The model's label (or name)."""
    seed: int
    point: SweepPoint
    base: TrialConfig
    """Attacks that state no ε or norm still have their own defaults here."""
    threat: ThreatConfig

    @property
    def needs_calibration(self) -> bool:
        return isinstance(self.threat.eps, Calibrated)

    def resolve(self, calibrated: float | None = None) -> TrialConfig:
        """The trial config with the threat applied (``calibrated``: the calibration's ε)."""
        if self.needs_calibration and calibrated is None:
            raise ValueError(f"trial {self.name} trains at the calibrated ε: calibrate first")
        return self.base.with_threat(resolve_threat(self.threat, calibrated))

    def before_calibration(self) -> TrialConfig:
        """The config as far as it is known before calibration: exact for the shared phases,
        which may not take a calibrated ε."""
        return self.base if self.needs_calibration else self.resolve()


def expand_trials(config: ExperimentConfig) -> list[TrialSpec]:
    """Every trial of the experiment, in order model → sweep point → seed; names must be
    unique. Raises ValueError naming the point and field when a trial does not validate."""
    specs = []
    for model in config.models:
        for point in sweep_points(config.sweep):
            seeds = [point.get("seed")] if point.get("seed") is not None else config.seeds
            for seed in seeds:
                specs.append(_spec(config, model, point, int(seed)))
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"trial names must be unique, repeated: {', '.join(repeated)} (give models a "
            "label, or sweep points a label)"
        )
    return specs


def _spec(config: ExperimentConfig, model: ModelConfig, point: SweepPoint, seed: int) -> TrialSpec:
    middle = f"-{point.label}" if point.label else ""
    name = f"{model.display_name}{middle}-s{seed}"
    where = f"trial {name}" + (f" (sweep point {point.label})" if point.label else "")
    trial: dict[str, Any] = {
        "experiment": config.name,
        "trial": name,
        "data": config.data.model_dump(mode="json", exclude_unset=True),
        "model": model.model_dump(mode="json", exclude_unset=True),
        "seed": seed,
        "phases": [phase.model_dump(mode="json", exclude_unset=True) for phase in config.phases],
        "evaluation": config.evaluation.model_dump(mode="json", exclude_unset=True),
        "device": config.device,
        "setting": point.label,
    }
    threat = config.threat.model_dump(mode="json", exclude_unset=True)
    for path, value in point.values:
        try:
            if path == "seed":
                continue
            if path.startswith("threat."):
                threat[path.split(".", 1)[1]] = value
            else:
                apply_value(trial, path, value)
        except ValueError as error:
            raise ValueError(f"sweep, {where}: {error}") from None
    try:
        base = TrialConfig.model_validate(trial)
        threat_config = ThreatConfig.model_validate(threat)
        spec = TrialSpec(name, model.display_name, seed, point, base, threat_config)
        spec.base.with_threat(resolve_threat(threat_config, None))  # the threat must fit
    except ValidationError as error:
        raise ValueError(format_validation_error(error, where)) from None
    if spec.needs_calibration and base.shared_phases_taking_eps():
        phases = ", ".join(base.shared_phases_taking_eps())
        raise ValueError(
            f"{where}: shared phase {phases} would train or be attacked after every epoch at "
            "the calibrated ε, but shared phases run before calibration; give their attacks "
            "and objective an eps of their own"
        )
    return spec
