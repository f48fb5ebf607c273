"""The defenses report: naive vs adaptive robust accuracy per defense, the sanity checks of
every evaluation, the published figures beside ours, and a bar chart of the two attacks."""

from __future__ import annotations

import io
import json
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

from robustlab.experiments.collect import ExperimentData
from robustlab.experiments.defending import EVALUATION_FILE
from robustlab.experiments.document import Callout, Report, Section
from robustlab.experiments.tables import Table, spread

PLANS = ("naive", "adaptive")


def defenses_report(data: ExperimentData, options: Any) -> Report:
    evaluations = _evaluations(data)
    missing = list(data.missing) + [
        f"{trial.trial} (defense not evaluated yet)"
        for trial in data.trials
        if trial.trial not in evaluations
    ]
    points = [label for label in data.settings() if _group(data, evaluations, label)]
    sections = [
        Section(
            "Naive vs adaptive attack",
            [_main_table(data, evaluations, points)],
            callouts=_callouts(data, evaluations, points),
            figures={"naive-vs-adaptive.png": _figure(data, evaluations, points)} if points else {},
        ),
        Section("Sanity checks", [_checks_table(data, evaluations)]),
    ]
    if options.published:
        sections.append(Section("Published figures", [_published_table(options, points)]))
    return Report(
        title=options.title or data.config.description or data.config.name,
        paragraphs=[text for text in (options.notes,) if text],
        sections=sections,
        closing=None,
        missing=missing,
    )


def _evaluations(data: ExperimentData) -> dict[str, dict[str, Any]]:
    found = {}
    for trial in data.trials:
        path = data.directory / trial.trial / EVALUATION_FILE
        if path.exists():
            found[trial.trial] = json.loads(path.read_text(encoding="utf-8"))
    return found


def _group(
    data: ExperimentData, evaluations: dict[str, dict[str, Any]], label: str | None
) -> list[dict[str, Any]]:
    return [
        evaluations[t.trial] for t in data.trials if t.setting == label and t.trial in evaluations
    ]


def _flags(group: list[dict[str, Any]], plan: str) -> str:
    names: list[str] = []
    for evaluation in group:
        names += [name for name in evaluation[plan]["flagged"] if name not in names]
    return ", ".join(names) or "none"


def _main_table(
    data: ExperimentData, evaluations: dict[str, dict[str, Any]], points: list[str | None]
) -> Table:
    rows = []
    for label in points:
        group = _group(data, evaluations, label)
        fpr = [e["clean"]["false_positive_rate"] for e in group]
        naive = [e["naive"]["robust_acc"] for e in group]
        adaptive = [e["adaptive"]["robust_acc"] for e in group]
        rows.append(
            [
                str(label),
                _defense_names(group[0]),
                str(len(group)),
                spread([e["clean"]["accuracy"] for e in group]).text(),
                "–" if fpr[0] is None else spread(fpr).text(),
                spread(naive).text(),
                spread(adaptive).text(),
                f"{100 * (sum(naive) - sum(adaptive)) / len(group):+.1f}",
                _flags(group, "naive"),
                _flags(group, "adaptive"),
                group[0]["adaptive"]["attack"]["gradients"],
            ]
        )
    return Table(
        title="Clean and robust accuracy (%) per defense, mean ± std over seeds",
        columns=[
            "defense",
            "wrappers",
            "seeds",
            "clean",
            "clean false positives",
            "naive attack",
            "adaptive attack",
            "naive − adaptive (points)",
            "naive: failed checks",
            "adaptive: failed checks",
            "adaptive gradients",
        ],
        rows=rows,
        note=_note(evaluations),
    )


def _defense_names(evaluation: dict[str, Any]) -> str:
    return " → ".join(spec["name"] for spec in evaluation["defenses"]) or "–"


def _describe(attack: dict[str, Any]) -> str:
    steps = f", {attack['steps']} steps" if "steps" in attack else ""
    loss = f", {attack['loss']} loss" if "loss" in attack else ""
    return f"{attack['attack']} ({attack['threat']}, ε = {attack['eps']:.4g}{steps}{loss})"


def _note(evaluations: dict[str, dict[str, Any]]) -> str:
    if not evaluations:
        return ""
    first = next(iter(evaluations.values()))
    naive, adaptive = first["naive"]["attack"], first["adaptive"]["attack"]
    return (
        f"The first {first['images']} test images. Naive: {_describe(naive)} with plain "
        f"gradients on the deployed defense. Adaptive: {_describe(adaptive)} (unless a "
        "defense overrides it) with the gradients in the last column, counted per image as "
        "the worst case with the naive attack; a joint attack is targeted at the clean "
        "prediction's runner-up classes. Robust: correct on the clean image and, on the "
        "adversarial one, still correct or rejected by a detector."
    )


def _callouts(
    data: ExperimentData, evaluations: dict[str, dict[str, Any]], points: list[str | None]
) -> list[Callout]:
    callouts = []
    for label in points:
        group = _group(data, evaluations, label)
        naive = sum(e["naive"]["robust_acc"] for e in group) / len(group)
        adaptive = sum(e["adaptive"]["robust_acc"] for e in group) / len(group)
        flagged = _flags(group, "naive")
        if flagged != "none":
            callouts.append(
                Callout(
                    f"{label}:",
                    f"the naive evaluation ({100 * naive:.1f}%) is flagged ({flagged}); "
                    f"the adaptive attack leaves {100 * adaptive:.1f}%.",
                )
            )
        if _flags(group, "adaptive") != "none":
            callouts.append(
                Callout(
                    f"{label}:",
                    f"even the adaptive evaluation is flagged ({_flags(group, 'adaptive')}): "
                    "its figure is an upper bound, not a measurement of robustness.",
                )
            )
    return callouts


def _checks_table(data: ExperimentData, evaluations: dict[str, dict[str, Any]]) -> Table:
    rows = []
    for trial in data.trials:
        evaluation = evaluations.get(trial.trial)
        if evaluation is None:
            continue
        for plan in PLANS:
            for check in evaluation[plan]["checks"]:
                rows.append(
                    [
                        trial.trial,
                        plan,
                        check["name"],
                        "pass" if check["passed"] else "FAIL",
                        check["measured"],
                        check["advice"],
                    ]
                )
    return Table(
        title="Sanity checks of every evaluation (Carlini et al. 2019)",
        columns=["trial", "attack", "check", "result", "measured", "what to try"],
        rows=rows,
        label_columns=3,
    )


def _published_table(options: Any, points: list[str | None]) -> Table:
    rows = [
        [str(label), figure.source, figure.setting, figure.figure]
        for label in points
        for figure in options.published.get(str(label), [])
    ]
    return Table(
        title="Published figures (quoted from the papers, not measured here)",
        columns=["defense", "source", "setting", "figure"],
        rows=rows,
    )


def _figure(
    data: ExperimentData, evaluations: dict[str, dict[str, Any]], points: list[str | None]
) -> bytes:
    figure = Figure(figsize=(max(5.0, 0.9 * len(points) + 2), 3.6))
    axis = figure.add_subplot(1, 1, 1)
    positions = range(len(points))
    for offset, plan, colour in ((-0.2, "naive", "#1f77b4"), (0.2, "adaptive", "#d62728")):
        values = []
        for label in points:
            group = _group(data, evaluations, label)
            values.append(100 * sum(e[plan]["robust_acc"] for e in group) / len(group))
        axis.bar([p + offset for p in positions], values, width=0.4, label=plan, color=colour)
    axis.set_xticks(list(positions), [str(label) for label in points], rotation=30, ha="right")
    axis.set_ylabel("robust accuracy (%)")
    axis.set_ylim(0, 100)
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
