"""The two-phase kind: thesis Table 5.1 and Figure 5.2.

Models trained in a "before" phase (standard training) and then an "after" phase
(adversarial training); the report gives Table 5.1's shape, robust accuracy under every
phase-end attack, the Figure 5.2 panels, the verdict on Hypothesis 1 when asked, and the
thesis's own numbers when ``reference: thesis-table-5-1``. One section per sweep point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from robustlab.config import ExperimentConfig, TrialSpec
from robustlab.experiments.collect import ExperimentData
from robustlab.experiments.document import Callout, Report, Section
from robustlab.experiments.kinds.base import ExperimentKind, register_kind
from robustlab.experiments.kinds.two_phase import figures
from robustlab.experiments.kinds.two_phase.options import TwoPhaseOptions
from robustlab.experiments.kinds.two_phase.tables import (
    anchors_table,
    hypothesis_verdict,
    robustness_table,
    table_5_1,
    thesis_reference_table,
    timing_table,
)


@register_kind
class TwoPhase(ExperimentKind):
    name: ClassVar[str] = "two-phase"
    description: ClassVar[str] = (
        "thesis Table 5.1 / Figure 5.2: accuracy and robustness before and after adversarial "
        "training, Hypothesis 1"
    )
    options: ClassVar[type[TwoPhaseOptions]] = TwoPhaseOptions

    def check(self, config: ExperimentConfig, options: Any, trials: Sequence[TrialSpec]) -> None:
        chosen: TwoPhaseOptions = options
        phases = [phase.name for phase in config.phases]
        for field in ("before_phase", "after_phase"):
            value = getattr(chosen, field)
            if value is not None and value not in phases:
                raise ValueError(f"report.{field}: no phase {value!r} (phases: {phases})")
        if chosen.hypothesis is not None:
            labels = [model.display_name for model in config.models]
            for field in ("shallow", "deep"):
                value = getattr(chosen.hypothesis, field)
                if value not in labels:
                    raise ValueError(
                        f"report.hypothesis.{field}: no model {value!r} (models: {labels})"
                    )

    def report(self, data: ExperimentData, options: Any) -> Report:
        chosen: TwoPhaseOptions = options
        sections = []
        for setting in data.settings():
            tail = "" if setting is None else f"-{setting}"
            verdict = hypothesis_verdict(data, setting)
            callouts = []
            if verdict is not None:
                callouts.append(
                    Callout(
                        lead="Hypothesis 1",
                        text=f"(deeper keeps more clean accuracy): {verdict.text}. Worst-case "
                        "robust accuracy after, deep minus shallow: "
                        f"{verdict.robust_difference.text()} points.",
                    )
                )
            sections.append(
                Section(
                    heading="Results" if setting is None else f"Setting {setting}",
                    tables=[table_5_1(data, setting), robustness_table(data, setting)],
                    callouts=callouts,
                    figures={
                        f"training{tail}.png": figures.training_figure(data, setting),
                        f"attack{tail}.png": figures.attack_figure(data, setting),
                        f"combined{tail}.png": figures.combined_figure(data, setting),
                    },
                )
            )
        closing = [timing_table(data)]
        if chosen.reference == "thesis-table-5-1":
            closing += [thesis_reference_table(), anchors_table()]
        closing_figures = {}
        if data.calibration is not None:
            closing_figures["calibration.png"] = figures.calibration_figure(data.calibration)
        config = data.config
        return Report(
            title=chosen.title or config.description or config.name,
            paragraphs=[text for text in (chosen.notes, calibration_text(data)) if text],
            sections=sections,
            closing=Section(heading="Context", tables=closing, figures=closing_figures),
            missing=data.missing,
        )


def calibration_text(data: ExperimentData) -> str:
    calibration = data.calibration
    if calibration is None:
        return ""
    eps = calibration["eps"]
    refined = ""
    if calibration.get("refine") == "target":
        refined = (
            ", halving only the brackets that could still move the ε at the target, so away "
            "from it the curve is a band"
        )
    return (
        f"Calibrated ε* = {eps:.4f} (about {255 * eps:.1f}/255): the smallest ε at which "
        f"{calibration['attack']} fools {calibration['target_success']:.0%} of the "
        f"clean-correct test images, pooled over {len(calibration['models'])} standard-trained "
        f"models ({calibration['examples']} examples from the first "
        f"{calibration['images_per_model']} test images each; per-example bisection, "
        f"resolution {calibration['resolution']:.4f}{refined}). "
        "The thesis's 'ε = 8' has no stated "
        "scale; training and attacking at ε* is our interpretation of it, chosen so the "
        "standard models' success rate matches the thesis's 56%."
    )
