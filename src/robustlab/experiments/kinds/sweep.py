"""The sweep kind: a table of every trial's results, and each sweep point over seeds.

For experiments that vary fields (depth, width, ε, objective, ...) rather than compare a
before and an after: every trial with its varied values, size, clean test accuracy at the end
of every phase and robust accuracy under every attack at the end of the reported phase; then
the same numbers as mean ± spread over seeds for each model and sweep point.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from robustlab.config import ExperimentConfig, StrictModel, TrialSpec
from robustlab.config.sweep import short_names
from robustlab.experiments.collect import ExperimentData, TrialSummary
from robustlab.experiments.document import Report, Section
from robustlab.experiments.kinds.base import ExperimentKind, register_kind
from robustlab.experiments.tables import Table, spread


class SweepOptions(StrictModel):
    title: str = ""
    notes: str = Field(default="", description="printed under the title, e.g. the protocol")
    phase: str | None = Field(
        default=None, description="phase whose end-of-phase evaluation is reported (default: last)"
    )


@register_kind
class Sweep(ExperimentKind):
    name: ClassVar[str] = "sweep"
    description: ClassVar[str] = (
        "every trial's results side by side, and each sweep point as mean ± spread over seeds"
    )
    options: ClassVar[type[SweepOptions]] = SweepOptions

    def check(self, config: ExperimentConfig, options: Any, trials: Sequence[TrialSpec]) -> None:
        chosen: SweepOptions = options
        phases = [phase.name for phase in config.phases]
        if chosen.phase is not None and chosen.phase not in phases:
            raise ValueError(f"report.phase: no phase {chosen.phase!r} (phases: {phases})")

    def report(self, data: ExperimentData, options: Any) -> Report:
        chosen: SweepOptions = options
        phase = chosen.phase or data.config.phases[-1].name
        attacks = _attack_names(data.trials, phase)
        return Report(
            title=chosen.title or data.config.description or data.config.name,
            paragraphs=[text for text in (chosen.notes,) if text],
            sections=[
                Section("Trials", [trials_table(data, phase, attacks)]),
                Section("Sweep points", [points_table(data, phase, attacks)]),
            ],
            closing=None,
            missing=data.missing,
        )


def _attack_names(trials: list[TrialSummary], phase: str) -> list[str]:
    names: list[str] = []
    for trial in trials:
        numbers = trial.phases.get(phase)
        if numbers is not None:
            names += [name for name in numbers.attack_names() if name not in names]
    return names


def _axes(data: ExperimentData) -> list[str]:
    return list(dict.fromkeys(path for spec in data.plan.trials for path, _ in spec.point.values))


def _headers(axes: list[str]) -> list[str]:
    """``depth``, ``width``: the shortest name that tells the varied fields apart."""
    names = short_names(axes)
    return [names[axis] for axis in axes]


def _robust(trial: TrialSummary, phase: str, attack: str | None) -> float | None:
    numbers = trial.phases.get(phase)
    if numbers is None or numbers.evaluation is None:
        return None
    evaluation = numbers.evaluation
    if attack is None:
        return float(evaluation["worst_case_acc"])
    found = evaluation["attacks"].get(attack)
    return None if found is None else float(found["robust_acc"])


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def trials_table(data: ExperimentData, phase: str, attacks: list[str]) -> Table:
    axes = _axes(data)
    phases = [p.name for p in data.config.phases]
    rows = []
    for trial in data.trials:
        clean = [trial.phases[p].test_acc if p in trial.phases else None for p in phases]
        rows.append(
            [
                trial.trial,
                *(_value(trial.point.get(axis)) for axis in axes),
                str(trial.seed),
                f"{trial.parameters:,}",
                *(_percent(value) for value in clean),
                *(_percent(_robust(trial, phase, attack)) for attack in attacks),
                _percent(_robust(trial, phase, None)),
                f"{trial.train_seconds / 60:.1f}",
            ]
        )
    return Table(
        title=f"Every trial: clean test accuracy after each phase, robust accuracy after "
        f"{phase} (%)",
        columns=[
            "trial",
            *_headers(axes),
            "seed",
            "parameters",
            *(f"clean after {p}" for p in phases),
            *(f"{attack} after {phase}" for attack in attacks),
            f"worst case after {phase}",
            "train minutes",
        ],
        rows=rows,
        note=_evaluation_note(data, phase),
    )


def points_table(data: ExperimentData, phase: str, attacks: list[str]) -> Table:
    last = data.config.phases[-1].name
    rows = []
    for setting in data.settings():
        for model in data.models():
            group = data.group(setting, model)
            if not group:
                continue
            rows.append(
                [
                    model,
                    setting or "–",
                    str(len(group)),
                    f"{group[0].parameters:,}",
                    spread(
                        [t.phases[last].test_acc if last in t.phases else None for t in group]
                    ).text(),
                    *(spread([_robust(t, phase, a) for t in group]).text() for a in attacks),
                    spread([_robust(t, phase, None) for t in group]).text(),
                    f"{statistics.fmean(t.train_seconds for t in group) / 60:.1f}",
                ]
            )
    return Table(
        title=f"Each model and sweep point: mean ± std over seeds (%), after {phase}",
        columns=[
            "model",
            "sweep point",
            "seeds",
            "parameters",
            f"clean after {last}",
            *(f"{attack}" for attack in attacks),
            "worst case",
            "train minutes per seed",
        ],
        rows=rows,
        label_columns=2,
        note=_evaluation_note(data, phase),
    )


def _evaluation_note(data: ExperimentData, phase: str) -> str:
    counts = set()
    for trial in data.trials:
        numbers = trial.phases.get(phase)
        if numbers is not None and numbers.evaluation is not None:
            counts.add(int(numbers.evaluation["images"]))
    images = ", ".join(str(count) for count in sorted(counts)) or "no"
    return (
        f"Robust accuracy: share of the first {images} test images still classified correctly "
        "under each end-of-phase attack (labels give attack, norm, ε and steps); worst case: "
        "robust only if every attack failed. Clean accuracy: the full test split."
    )


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", value.get("name", value)))
    if isinstance(value, float):
        return f"{value:g}"
    return "–" if value is None else str(value)
