"""The defenses kind: each sweep point is a defense, judged by a naive and an adaptive attack
side by side, same ε, same images, with the sanity checks that flag gradient masking.

A point is a defense either as wrappers (``model.defenses: [{name: jpeg}]``), as training
(``phases: [...]`` with a defense objective), or both. After every trial is trained, each is
evaluated (``robustlab.experiments.defending``); the report shows, per defense, clean
accuracy, the clean false-positive rate of its detectors, robust accuracy under the naive
attack (what the defense's paper reported) and under the adaptive one, the failed checks of
each, and the published figures the config cites beside ours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field
from torch import nn

from robustlab.config import AttackConfig, ExperimentConfig, StrictModel, TrialConfig, TrialSpec
from robustlab.config.threat import resolve_threat
from robustlab.data import dataset_info
from robustlab.defenses import Gradients, build_defended, check_gradients
from robustlab.errors import RobustlabError
from robustlab.evaluate.sanity import CheckSettings
from robustlab.experiments.collect import ExperimentData
from robustlab.experiments.defending import (
    EVALUATION_FILE,
    DefenseSettings,
    evaluate_trial_defense,
    read_evaluation,
)
from robustlab.experiments.document import Report
from robustlab.experiments.kinds.base import (
    ExperimentKind,
    Published,
    register_kind,
    require_fixed_eps,
)
from robustlab.train.reporter import TrainingReporter


class GradientOptions(StrictModel):
    """How the adaptive attack differentiates this defense (replaces the automatic choice)."""

    bpda: bool = False
    eot: int = Field(default=1, ge=1, le=1000)
    joint: bool = False


class DefenseOverride(StrictModel):
    attack: AttackConfig | None = Field(
        default=None, description="the adaptive attack for this defense (default: adaptive)"
    )
    gradients: GradientOptions | None = None


class ChecksOptions(StrictModel):
    images: int = Field(default=200, ge=1)
    max_zero_gradients: float = Field(default=0.3, gt=0, lt=1)
    min_gradient_cosine: float = Field(default=0.9, gt=-1, lt=1)
    max_unbounded_accuracy: float = Field(default=0.1, ge=0, lt=1)
    tolerance: float = Field(default=0.02, ge=0, lt=1)
    square_queries: int = Field(default=1000, ge=1)


class DefensesOptions(StrictModel):
    title: str = ""
    notes: str = ""
    images: int = Field(default=500, ge=1, description="first N test images, for every attack")
    batch_size: int = Field(default=500, ge=1)
    naive: AttackConfig = Field(
        default_factory=lambda: AttackConfig.model_validate({"name": "pgd", "steps": 40}),
        description="the attack the defenses' papers reported, with plain gradients",
    )
    adaptive: AttackConfig = Field(
        default_factory=lambda: AttackConfig.model_validate(
            {"name": "pgd", "steps": 100, "loss": "cw"}
        ),
        description="the adaptive attack: with BPDA / EOT / joint detectors as each defense "
        "calls for, unless overridden",
    )
    eot: int = Field(default=10, ge=1, le=1000, description="EOT draws for random defenses")
    targets: int = Field(default=3, ge=1, description="runner-up classes a joint attack tries")
    fit_images: int = Field(default=10_000, ge=1, description="training images detectors learn on")
    held_out_images: int = Field(
        default=2000, ge=10, description="last N training images: detector thresholds"
    )
    surrogate: str | None = Field(
        default="undefended", description="sweep point whose models are the transfer surrogate"
    )
    overrides: dict[str, DefenseOverride] = Field(
        default_factory=dict, description="per sweep point label: its adaptive attack"
    )
    checks: ChecksOptions = Field(default_factory=ChecksOptions)
    published: dict[str, list[Published]] = Field(default_factory=dict)


@register_kind
class Defenses(ExperimentKind):
    name: ClassVar[str] = "defenses"
    description: ClassVar[str] = (
        "each sweep point a defense: naive vs adaptive attack, same ε and images, with "
        "sanity checks that flag gradient masking"
    )
    options: ClassVar[type[DefensesOptions]] = DefensesOptions

    def check(self, config: ExperimentConfig, options: Any, trials: Sequence[TrialSpec]) -> None:
        chosen: DefensesOptions = options
        require_fixed_eps(config, trials, "a defenses experiment")
        labels = {spec.point.label for spec in trials}
        for field, keys in (("overrides", chosen.overrides), ("published", chosen.published)):
            for key in keys:
                if key not in labels:
                    raise ValueError(
                        f"report.{field}.{key}: no sweep point (defense) is labelled {key!r}; "
                        f"points: {', '.join(sorted(str(label) for label in labels))}"
                    )
        if chosen.surrogate is not None and chosen.surrogate not in labels:
            raise ValueError(
                f"report.surrogate: no sweep point is labelled {chosen.surrogate!r} (the "
                "undefended model the transfer check attacks); label one so, or set null"
            )
        for spec in trials:
            self._check_trial(config, chosen, spec)

    def _check_trial(
        self, config: ExperimentConfig, options: DefensesOptions, spec: TrialSpec
    ) -> None:
        trial = spec.resolve()
        info = dataset_info(trial.data.dataset)
        where = f"trial {spec.name}"
        try:
            specs = [d.spec() for d in trial.model.defenses]
            defended = build_defended(nn.Identity(), specs, info.input_shape, info.num_classes)
        except RobustlabError as error:
            raise ValueError(f"{where}: model.{error}") from None
        override = options.overrides.get(str(spec.point.label))
        if override is not None and override.gradients is not None:
            try:
                check_gradients(defended, Gradients(**override.gradients.model_dump()))
            except RobustlabError as error:
                raise ValueError(f"report.overrides.{spec.point.label}.{error}") from None
        threat = resolve_threat(spec.threat, None)
        for label, attack in self._attacks(options, spec.point.label):
            try:
                built = attack.with_threat(threat).build()
                built.check_budget(info.input_shape)
            except RobustlabError as error:
                raise ValueError(f"{where}, {label} attack: {error}") from None
            if label == "adaptive" and defended.has_detectors and built.untargeted_only:
                raise ValueError(
                    f"{where}: the adaptive attack on detectors is targeted at runner-up "
                    f"classes, but {attack.name!r} has no targeted variant: choose e.g. pgd"
                )

    def _attacks(
        self, options: DefensesOptions, label: str | None
    ) -> list[tuple[str, AttackConfig]]:
        override = options.overrides.get(str(label))
        adaptive = override.attack if override is not None and override.attack else options.adaptive
        return [("naive", options.naive), ("adaptive", adaptive)]

    def settings(
        self, config: ExperimentConfig, options: Any, spec: TrialSpec, trial: TrialConfig
    ) -> DefenseSettings:
        """The trial's evaluation settings, with the threat's ε in both attacks."""
        chosen: DefensesOptions = options
        threat = resolve_threat(spec.threat, None)
        attacks = dict(self._attacks(chosen, spec.point.label))
        override = chosen.overrides.get(str(spec.point.label))
        gradients = None
        if override is not None and override.gradients is not None:
            gradients = override.gradients.model_dump()
        return DefenseSettings(
            images=chosen.images,
            batch_size=chosen.batch_size,
            naive=attacks["naive"].with_threat(threat),
            adaptive=attacks["adaptive"].with_threat(threat),
            gradients=gradients,
            eot=chosen.eot,
            targets=chosen.targets,
            fit_images=chosen.fit_images,
            held_out_images=chosen.held_out_images,
            checks=CheckSettings(**chosen.checks.model_dump()),
            surrogate=_surrogate_trial(config, chosen.surrogate, spec),
        )

    def trial_evaluation(
        self, config: ExperimentConfig, options: Any, spec: TrialSpec, trial: TrialConfig, out: Path
    ) -> Callable[[TrainingReporter], Any] | None:
        settings = self.settings(config, options, spec, trial)
        stored = out / config.name / trial.trial / EVALUATION_FILE
        if stored.exists():
            read_evaluation(stored, settings)  # refuses stale settings before any work
            return None
        return partial(evaluate_trial_defense, config, trial, settings, out)

    def evaluation_needs(
        self, config: ExperimentConfig, options: Any, spec: TrialSpec, trial: TrialConfig
    ) -> tuple[str, ...]:
        """Its own trial and the transfer check's surrogate, if any."""
        surrogate = _surrogate_trial(config, options.surrogate, spec)
        return tuple(dict.fromkeys(name for name in (trial.trial, surrogate) if name))

    def report(self, data: ExperimentData, options: Any) -> Report:
        from robustlab.experiments.kinds.defense_report import defenses_report

        return defenses_report(data, options)


def _surrogate_trial(config: ExperimentConfig, label: str | None, spec: TrialSpec) -> str | None:
    """The trial of the surrogate point with this trial's model and seed."""
    if label is None:
        return None
    from robustlab.config import expand_trials

    for other in expand_trials(config):
        if other.point.label == label and other.model == spec.model and other.seed == spec.seed:
            return other.name
    return None
