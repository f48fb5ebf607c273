"""What one run directory holds: a model trained with one seed through its phases.

Every value here is concrete: the experiment layer resolves its threat (and a calibrated ε)
before it builds a ``TrialConfig``, so the trainer never sees a placeholder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from robustlab.config.attacks import AttackConfig
from robustlab.config.base import NAME_PATTERN, StrictModel
from robustlab.config.objectives import (
    ObjectiveConfig,
    StandardObjectiveConfig,
    check_teacher_phases,
    training_attack,
)
from robustlab.config.threat import Threat


class AugmentConfig(StrictModel):
    """Training-time augmentation (never applied to evaluation or attacks)."""

    crop_padding: int = Field(
        default=0, ge=0, le=16, description="random crop after this much zero padding (CIFAR: 4)"
    )
    flip: bool = Field(default=False, description="random horizontal flip")


class DataConfig(StrictModel):
    dataset: str = Field(description="registry name, e.g. mnist, fashion-mnist, digits")
    fallback: list[str] = Field(
        default_factory=list,
        description="datasets to use, in order, when the primary one's files are absent",
    )
    root: Path | None = Field(default=None, description="data root; else $ROBUSTLAB_DATA")
    train_images: int | None = Field(
        default=None,
        ge=1,
        description="train on the first N training images only (default: all of them)",
    )
    augment: AugmentConfig | None = Field(
        default=None, description="training-time augmentation, e.g. {crop_padding: 4, flip: true}"
    )


class DefenseConfig(BaseModel):
    """A registered defense component and its options: ``{name: jpeg, quality: 75}``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(description="defense registry name (robustlab defenses lists them)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _known(self) -> DefenseConfig:
        from robustlab.defenses import DEFENSES, defense_options  # defenses import no config

        if self.name not in DEFENSES:
            known = ", ".join(sorted(DEFENSES.names()))
            raise ValueError(f"unknown defense {self.name!r}; defenses: {known}")
        known_options = defense_options(self.name)
        for option in self.options:
            if option not in known_options:
                listed = ", ".join(known_options) or "(none)"
                raise ValueError(
                    f"defense {self.name!r} has no option {option!r}; options: {listed}"
                )
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


class ModelConfig(StrictModel):
    name: str = Field(description="model registry name, e.g. thesis-shallow")
    options: dict[str, Any] = Field(default_factory=dict, description="builder options")
    defenses: list[DefenseConfig] = Field(
        default_factory=list,
        description="defenses wrapped around the trained classifier, in order (input "
        "transforms, logit noise, detectors); training sees the classifier alone",
    )
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

    def with_threat(self, threat: Threat) -> PhaseEvaluationConfig:
        return self.model_copy(
            update={
                "attacks": _with_threat(self.attacks, threat),
                "phase_end_attacks": _with_threat(self.phase_end_attacks, threat),
            }
        )


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

    def with_threat(self, threat: Threat) -> PhaseConfig:
        """The phase with the threat's ε and norm wherever its attacks state none."""
        if threat.empty:
            return self
        return self.model_copy(
            update={
                "objective": self.objective.with_threat(threat),
                "evaluation": self.evaluation.with_threat(threat),
            }
        )


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

    def with_threat(self, threat: Threat) -> EvaluationConfig:
        return self.model_copy(
            update={
                "attacks": _with_threat(self.attacks, threat),
                "phase_end_attacks": _with_threat(self.phase_end_attacks, threat) or [],
            }
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
    setting: str | None = Field(
        default=None, description="the sweep point's label in its experiment, if any"
    )

    @field_validator("phases")
    @classmethod
    def _unique_phase_names(cls, phases: list[PhaseConfig]) -> list[PhaseConfig]:
        check_phase_names(phases)
        check_teacher_phases(phases)
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

    def shared_phases_taking_eps(self) -> list[str]:
        """Shared phases whose training, or whose attacks after every epoch, would take the
        threat's ε: trained before calibration, they cannot use a calibrated one (their
        phase-end attacks can: each trial runs those itself)."""
        return [
            phase.name
            for phase in self.phases
            if phase.shared
            and (
                phase.objective.inherits_eps()
                or any(attack.inherits("eps") for attack in self.phase_attacks(phase))
            )
        ]

    def with_threat(self, threat: Threat) -> TrialConfig:
        """Every attack and objective that states no ε or norm of its own takes the threat's."""
        if threat.empty:
            return self
        return self.model_copy(
            update={
                "phases": [phase.with_threat(threat) for phase in self.phases],
                "evaluation": self.evaluation.with_threat(threat),
            }
        )


def check_phase_names(phases: list[PhaseConfig]) -> None:
    """Phases are addressed by name (their weights file, sweep paths, reports): one name, one
    phase. Raises ValueError naming the repeating entries."""
    first: dict[str, int] = {}
    repeated: dict[str, None] = {}
    where = []
    for index, phase in enumerate(phases):
        if phase.name in first:
            repeated[phase.name] = None
            where.append(
                f"phases.{index}.name repeats {phase.name!r} of phases.{first[phase.name]}.name"
            )
        first.setdefault(phase.name, index)
    if repeated:
        raise ValueError(
            f"phase names must be unique; repeated: {', '.join(repeated)} ({'; '.join(where)}); "
            "give each phase its own name"
        )


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


def _with_threat(attacks: list[AttackConfig] | None, threat: Threat) -> list[AttackConfig] | None:
    return None if attacks is None else [attack.with_threat(threat) for attack in attacks]
