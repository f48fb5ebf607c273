"""The plasticity-map kind: the two-phase protocol over a depth × width grid, answering
Hypothesis 1 with size taken out.

Each trial trains a model normally, then adversarially. The report sets clean accuracy
before and after, robust accuracy, robust fit (accuracy on the training attack's examples,
measured after training) and the robustness cost (clean accuracy lost) against depth, width,
parameters and multiply-adds; fits ``measure = a + b·depth + c·log2(parameters)`` and says
whether one more layer at equal parameter count lowers the cost. With ``compression:``, every
trained model is also pruned and quantised and its robustness measured again; with
``distillation:``, it teaches a narrower student whose robustness is measured beside its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from robustlab.config import AttackConfig, ExperimentConfig, TrialConfig, TrialSpec
from robustlab.config.threat import resolve_threat
from robustlab.experiments.collect import ExperimentData
from robustlab.experiments.distillation_probe import (
    DISTILLATION_FILE,
    DistillationSettings,
    distil_trial,
    read_distillation,
    student_model,
)
from robustlab.experiments.document import Report
from robustlab.experiments.kinds.base import ExperimentKind, register_kind, require_fixed_eps
from robustlab.experiments.kinds.plasticity.options import PlasticityMapOptions
from robustlab.experiments.plasticity_probe import (
    EVALUATION_FILE,
    CompressionSettings,
    ProbeSettings,
    probe_trial,
    read_probe,
)
from robustlab.models import model_options
from robustlab.train.reporter import TrainingReporter


@register_kind
class PlasticityMap(ExperimentKind):
    name: ClassVar[str] = "plasticity-map"
    description: ClassVar[str] = (
        "depth × width grid of standard-then-adversarial training: heatmaps, robust fit, the "
        "cost at equal parameter count and the depth-vs-width verdict"
    )
    options: ClassVar[type[PlasticityMapOptions]] = PlasticityMapOptions

    def check(self, config: ExperimentConfig, options: Any, trials: Sequence[TrialSpec]) -> None:
        chosen: PlasticityMapOptions = options
        require_fixed_eps(config, trials, "a plasticity map")
        phases = [phase.name for phase in config.phases]
        for field in ("before_phase", "after_phase"):
            value = getattr(chosen, field)
            if value is not None and value not in phases:
                raise ValueError(f"report.{field}: no phase {value!r} (phases: {phases})")
        after = chosen.after_phase or phases[-1]
        phase = next(p for p in config.phases if p.name == after)
        if phase.attack is None:
            raise ValueError(
                f"report.after_phase: phase {after!r} trains without an attack "
                f"({phase.objective.type}); the map needs an adversarial phase last, or name "
                "one in after_phase"
            )
        for field in ("depth", "width"):
            path = getattr(chosen, field)
            if not path.startswith("model.options."):
                raise ValueError(
                    f"report.{field}: {path!r} is not a model option (model.options.NAME)"
                )
            option = path.removeprefix("model.options.")
            for model in config.models:
                if option not in model_options(model.name):
                    raise ValueError(
                        f"report.{field}: model {model.name!r} has no option {option!r}; its "
                        f"options: {', '.join(model_options(model.name))}"
                    )
        if chosen.distillation is not None:
            width = chosen.width.removeprefix("model.options.")
            for spec in trials:
                student_model(spec.resolve().model, width, chosen.distillation.width_factor)

    def settings(self, config: ExperimentConfig, options: Any, spec: TrialSpec) -> ProbeSettings:
        chosen: PlasticityMapOptions = options
        after, attack = _training_attack(chosen, spec)
        compression = None
        if chosen.compression is not None:
            threat = resolve_threat(spec.threat, None)
            compression = CompressionSettings(
                sparsities=tuple(chosen.compression.sparsities),
                fine_tune_steps=chosen.compression.fine_tune_steps,
                fine_tune_lr=chosen.compression.fine_tune_lr,
                batch_size=chosen.compression.batch_size,
                bits=tuple(chosen.compression.bits),
                attack=chosen.compression.attack.with_threat(threat),
                images=chosen.compression.images,
            )
        return ProbeSettings(
            phase=after,
            training_attack=attack,
            fit_images=chosen.fit_images,
            batch_size=chosen.batch_size,
            compression=compression,
        )

    def distillation_settings(self, options: Any, spec: TrialSpec) -> DistillationSettings | None:
        chosen: PlasticityMapOptions = options
        if chosen.distillation is None:
            return None
        _, attack = _training_attack(chosen, spec)
        threat = resolve_threat(spec.threat, None)
        student = chosen.distillation
        return DistillationSettings(
            width_option=chosen.width.removeprefix("model.options."),
            width_factor=student.width_factor,
            steps=student.steps,
            eps_warmup_steps=student.eps_warmup_steps,
            lr=student.lr,
            batch_size=student.batch_size,
            temperature=student.temperature,
            training_attack=attack,
            attack=student.attack.with_threat(threat),
            images=student.images,
        )

    def trial_evaluation(
        self, config: ExperimentConfig, options: Any, spec: TrialSpec, trial: TrialConfig, out: Path
    ) -> Callable[[TrainingReporter], Any] | None:
        settings = self.settings(config, options, spec)
        distillation = self.distillation_settings(options, spec)
        folder = out / config.name / trial.trial
        probed = (folder / EVALUATION_FILE).exists()
        if probed:
            read_probe(folder / EVALUATION_FILE, settings)  # refuses stale settings now
        distilled = distillation is None or (folder / DISTILLATION_FILE).exists()
        if distillation is not None and distilled:
            read_distillation(folder / DISTILLATION_FILE, distillation)
        if probed and distilled:
            return None
        return partial(
            _evaluate_trial,
            config,
            trial,
            None if probed else settings,
            None if distilled else distillation,
            out,
        )

    def evaluation_needs(
        self, config: ExperimentConfig, options: Any, spec: TrialSpec, trial: TrialConfig
    ) -> tuple[str, ...]:
        return (trial.trial,)

    def report(self, data: ExperimentData, options: Any) -> Report:
        from robustlab.experiments.kinds.plasticity.report import plasticity_report

        return plasticity_report(data, options)


def _training_attack(chosen: PlasticityMapOptions, spec: TrialSpec) -> tuple[str, AttackConfig]:
    """The after phase's name and its training attack."""
    trial = spec.resolve()
    after = chosen.after_phase or trial.phases[-1].name
    attack = next(p for p in trial.phases if p.name == after).attack
    assert attack is not None  # check() refused a phase without one
    return after, attack


def _evaluate_trial(
    config: ExperimentConfig,
    trial: TrialConfig,
    probe: ProbeSettings | None,
    distillation: DistillationSettings | None,
    out: Path,
    reporter: TrainingReporter,
) -> None:
    """The measurements still missing from the trial's folder: the probe, the distillation."""
    if probe is not None:
        probe_trial(config, trial, probe, out, reporter)
    if distillation is not None:
        distil_trial(config, trial, distillation, out, reporter)
