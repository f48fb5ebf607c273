"""The two-phase kind's numbers: Table 5.1's shape, robust accuracy side by side, the
verdict on Hypothesis 1 and the thesis's own figures, each as mean ± spread over seeds."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from robustlab.experiments.collect import ExperimentData, PhaseNumbers, TrialSummary
from robustlab.experiments.tables import Spread, Table, spread
from robustlab.experiments.tables import suffix as _suffix

if TYPE_CHECKING:
    from robustlab.experiments.kinds.two_phase.options import HypothesisConfig, TwoPhaseOptions

THESIS_TABLE_5_1 = {
    "thesis-shallow": {"train before": 99.50, "test before": 98.80, "train after": 88.67,
                       "test after": 94.91},
    "thesis-deep": {"train before": 98.70, "test before": 98.36, "train after": 94.05,
                    "test after": 97.33},
}  # fmt: skip
"""Thesis Table 5.1 (MNIST, %), before and after adversarial training."""
THESIS_SUCCESS = {"before": 56.0, "after": 12.0}
"""The adversary's success rate the thesis reports before and after adversarial training (%)."""
PUBLISHED_ANCHORS = [
    ("Madry et al. 2018: PGD-40 training, 100k steps (madry-mnist)",
     "89.3% under PGD-100 with restarts; 88.5% under AutoAttack"),
    ("Wong et al. 2020: fast FGSM-RS training", "82.9% under AutoAttack"),
    ("TRADES (Zhang et al. 2019)", "92.8% under AutoAttack"),
]  # fmt: skip
"""MNIST, L∞ ε = 0.3 robust test accuracy (MNIST-challenge and AutoAttack leaderboards)."""


@dataclass(frozen=True)
class Reading:
    """How to read the trials: which phases are before/after, which attack is the adversary."""

    before: str
    after: str
    adversary: str | None


def reading(data: ExperimentData) -> Reading:
    report: TwoPhaseOptions = data.options
    names = [phase.name for phase in data.config.phases]
    return Reading(
        before=report.before_phase or names[0],
        after=report.after_phase or names[-1],
        adversary=report.adversary,
    )


def _phase(trial: TrialSummary, name: str) -> PhaseNumbers | None:
    return trial.phases.get(name)


def _success(phase: PhaseNumbers | None, adversary: str | None) -> float | None:
    found = None if phase is None else phase.attack(adversary)
    return None if found is None else float(found[1]["success_rate"])


def adversary_label(data: ExperimentData, read: Reading, phase: str) -> str:
    for trial in data.trials:
        found = _phase(trial, phase)
        attack = None if found is None else found.attack(read.adversary)
        if attack is not None:
            return attack[0]
    return "–"


def adversary_images(data: ExperimentData, read: Reading, phase: str) -> int | None:
    """How many test images the adversary ran on at the end of ``phase`` (attacks may set
    their own count, below the evaluation's)."""
    for trial in data.trials:
        found = _phase(trial, phase)
        attack = None if found is None else found.attack(read.adversary)
        if found is not None and found.evaluation is not None and attack is not None:
            return int(attack[1].get("images", found.evaluation["images"]))
    return None


def _adversary_images_text(data: ExperimentData, read: Reading) -> str:
    counts = {phase: adversary_images(data, read, phase) for phase in (read.before, read.after)}
    known = {count for count in counts.values() if count is not None}
    if not known:
        return f"the first {data.config.evaluation.attack_images} test images"
    if len(known) == 1:
        return f"the first {known.pop()} test images"
    return " and ".join(
        f"the first {count} test images {where} ({phase})"
        for (phase, count), where in zip(counts.items(), ("before", "after"), strict=True)
    )


def table_5_1(data: ExperimentData, setting: str | None) -> Table:
    """Thesis Table 5.1's shape: accuracy before and after adversarial training, and the
    adversary's success rate, mean ± std over seeds."""
    read = reading(data)
    rows = []
    for model in data.models():
        group = data.group(setting, model)
        if not group:
            continue
        before = [_phase(t, read.before) for t in group]
        after = [_phase(t, read.after) for t in group]
        rows.append(
            [
                model,
                str(len(group)),
                spread([p.train_acc if p else None for p in before]).text(),
                spread([p.test_acc if p else None for p in before]).text(),
                spread([p.train_acc if p else None for p in after]).text(),
                spread([p.running_train_acc if p else None for p in after]).text(),
                spread([p.test_acc if p else None for p in after]).text(),
                spread([_success(p, read.adversary) for p in before]).text(1),
                spread([_success(p, read.adversary) for p in after]).text(1),
            ]
        )
    adversary = adversary_label(data, read, read.after)
    return Table(
        title=f"Table 5.1 shape{_suffix(setting)}: before ({read.before}) and after "
        f"({read.after}), % (mean ± std over seeds)",
        columns=[
            "model",
            "seeds",
            "train before",
            "test before",
            "train after (clean)",
            "train after (on training attack)",
            "test after",
            "adversary success before",
            "adversary success after",
        ],
        rows=rows,
        note=f"train = eval-mode accuracy on the fixed training subset; 'on training attack' "
        f"= running accuracy of the last epoch on the training attack's examples (dropout on); "
        f"test = full test split; adversary = {adversary} on "
        f"{_adversary_images_text(data, read)}, success = share of the clean-correct ones "
        "it fools.",
    )


def robustness_table(data: ExperimentData, setting: str | None) -> Table:
    """Every phase-end attack and the worst case side by side, before and after."""
    read = reading(data)
    labels: list[str] = []
    images: dict[str, set[int]] = {}
    for trial in data.trials:
        for phase in (read.before, read.after):
            found = _phase(trial, phase)
            if found is None or found.evaluation is None:
                continue
            labels += [name for name in found.attack_names() if name not in labels]
            for name, result in found.evaluation["attacks"].items():
                images.setdefault(name, set()).add(result.get("images", found.evaluation["images"]))
            worst = found.evaluation.get("worst_case_images", found.evaluation["images"])
            images.setdefault("worst case", set()).add(worst)
    rows = []
    for model in data.models():
        group = data.group(setting, model)
        for phase_name in dict.fromkeys((read.before, read.after)):
            phases = [_phase(t, phase_name) for t in group]
            evaluations = [p.evaluation for p in phases if p is not None and p.evaluation]
            if not evaluations:
                continue
            cells = [model, phase_name, spread([e["clean_acc"] for e in evaluations]).text()]
            for label in labels:
                accuracies = [
                    e["attacks"][label]["robust_acc"] for e in evaluations if label in e["attacks"]
                ]
                cells.append(spread(accuracies).text())
            cells.append(spread([e["worst_case_acc"] for e in evaluations]).text())
            rows.append(cells)
    total = data.config.evaluation.attack_images

    def header(label: str) -> str:
        counts = images.get(label, set())
        fewer = sorted(count for count in counts if count < total)
        return f"{label} (first {fewer[0]})" if fewer else label

    return Table(
        title=f"Robust accuracy{_suffix(setting)}, % of the first {total} test images "
        "(mean ± std over seeds)",
        columns=["model", "weights after", "clean", *map(header, labels), header("worst case")],
        rows=rows,
        label_columns=2,
        note="Each attack runs on the clean-correct images independently (a column marked "
        "'first N' on only the first N images); 'worst case' counts an image as robust only if "
        "every attack failed on it. Labels give the attack, norm, ε and steps; autoattack = "
        "APGD-CE → APGD-T → Square (robustlab's, checked against the authors' code).",
    )


@dataclass(frozen=True)
class Verdict:
    setting: str | None
    difference: Spread
    """Per seed: shallow's clean test-accuracy drop minus deep's (points; > 0 favours H1)."""
    robust_difference: Spread
    """Per seed: deep's worst-case robust accuracy after minus shallow's (points)."""
    text: str


def hypothesis_verdict(data: ExperimentData, setting: str | None) -> Verdict | None:
    """Hypothesis 1 from paired seeds: does the deep model lose less clean accuracy?"""
    options: TwoPhaseOptions = data.options
    config = options.hypothesis
    if config is None:
        return None
    read = reading(data)
    shallow = {t.seed: t for t in data.group(setting, config.shallow)}
    deep = {t.seed: t for t in data.group(setting, config.deep)}
    drops, robust = [], []
    for seed in sorted(set(shallow) & set(deep)):
        pair = [
            (_phase(t, read.before), _phase(t, read.after)) for t in (shallow[seed], deep[seed])
        ]
        if any(before is None or after is None for before, after in pair):
            continue
        (s_before, s_after), (d_before, d_after) = pair
        assert s_before and s_after and d_before and d_after
        drops.append(
            (s_before.test_acc - s_after.test_acc) - (d_before.test_acc - d_after.test_acc)
        )
        if s_after.evaluation and d_after.evaluation:
            robust.append(
                d_after.evaluation["worst_case_acc"] - s_after.evaluation["worst_case_acc"]
            )
    difference, robust_difference = spread(drops), spread(robust)
    return Verdict(setting, difference, robust_difference, _verdict_text(config, difference))


def _verdict_text(config: HypothesisConfig, difference: Spread) -> str:
    n = len(difference.values)
    if n == 0:
        return "no seed has both models finished"
    mean = round(difference.mean, 2) + 0.0  # no "-0.00"
    favour = sum(value > 0 for value in difference.values)
    measure = (
        f"clean test-accuracy drop under adversarial training, {config.shallow} minus "
        f"{config.deep} (> 0: the deeper model keeps more)"
    )
    if n < 2:
        return f"one seed only, which cannot settle it: {measure} = {mean:+.2f} points"
    margin = 2 * difference.std / math.sqrt(n)
    if mean - margin > 0:
        call = "supported"
    elif mean + margin < 0:
        call = "contradicted"
    else:
        call = "not resolved"
    return (
        f"{call} by these {n} seeds: {measure} = {mean:+.2f} ± {difference.std:.2f} points "
        f"(paired by seed; > 0 in {favour} of {n}; rule: the mean must clear 2 standard "
        f"errors, here {margin:.2f})"
    )


def thesis_reference_table() -> Table:
    rows = [
        [model, *(f"{value:.2f}" for value in values.values())]
        for model, values in THESIS_TABLE_5_1.items()
    ]
    return Table(
        title="Thesis Table 5.1 (MNIST, %), for comparison",
        columns=["model", *next(iter(THESIS_TABLE_5_1.values())).keys()],
        rows=rows,
        note=f"The thesis reports the adversary's success rate falling from about "
        f"{THESIS_SUCCESS['before']:.0f}% to about {THESIS_SUCCESS['after']:.0f}%, with a "
        "200-iteration PGD at an unstated 'ε = 8'.",
    )


def anchors_table() -> Table:
    return Table(
        title="Published anchors: MNIST, L∞ ε = 0.3, robust test accuracy",
        columns=["training", "robust accuracy"],
        rows=[[name, value] for name, value in PUBLISHED_ANCHORS],
    )


def timing_table(data: ExperimentData) -> Table:
    rows = []
    for setting in data.settings():
        for model in data.models():
            group = data.group(setting, model)
            if group:
                seconds = [t.train_seconds for t in group]
                rows.append(
                    [
                        model + _suffix(setting),
                        f"{group[0].parameters:,}",
                        str(len(group)),
                        f"{statistics.fmean(seconds) / 60:.1f}",
                        str(sum(len(t.early_stops) for t in group)),
                    ]
                )
    return Table(
        title="Training cost",
        columns=["trial group", "parameters", "seeds", "train minutes per seed", "early stops"],
        rows=rows,
        note="Training time includes the shared phases (trained once, counted in every trial "
        "that starts from them); evaluation time is not included.",
    )
