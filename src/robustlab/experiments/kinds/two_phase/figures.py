"""The Figure 5.2 panels as PNG bytes: training statistics over epochs, attack statistics
over PGD iterations, both side by side, and the ε calibration curve.

Curves are means over seeds with a band of ± one standard deviation; colours are models,
so shallow and deep can be compared at a glance.
"""

from __future__ import annotations

import io
import math
import re
import statistics
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

from robustlab.experiments.collect import ExperimentData
from robustlab.experiments.kinds.two_phase.tables import Reading, reading

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _png(figure: Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _band(
    axis: Axes, xs: Sequence[float], runs: list[list[float]], colour: str, **style: Any
) -> None:
    """Mean over runs (equal-length lists), with ± one standard deviation shaded."""
    if not runs:
        return
    length = min(len(run) for run in runs)
    columns = [[run[i] for run in runs] for i in range(length)]
    mean = [statistics.fmean(column) for column in columns]
    axis.plot(xs[:length], mean, color=colour, **style)
    if len(runs) > 1:
        std = [statistics.stdev(column) for column in columns]
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        axis.fill_between(xs[:length], low, high, color=colour, alpha=0.15, linewidth=0)


EPS_IN_LABEL = re.compile(r"-eps([0-9.]+(?:e-?[0-9]+)?)")


def label_eps(label: str) -> float | None:
    match = EPS_IN_LABEL.search(label)
    return float(match.group(1)) if match else None


def epoch_attack_key(records: list[dict[str, Any]], near_eps: float | None = None) -> str | None:
    """The per-epoch attack recorded in every one of ``records``: the one whose ε is nearest
    ``near_eps`` if given (so phases attacked at several ε line up), else the strongest."""
    common: set[str] | None = None
    for record in records:
        keys = set(record.get("attacks", {}))
        common = keys if common is None else common & keys
    if not common:
        return None

    def mean_accuracy(key: str) -> float:
        return statistics.fmean(record["attacks"][key]["robust_acc"] for record in records)

    def distance(key: str) -> float:
        eps = label_eps(key)
        return abs(eps - near_eps) if eps is not None and near_eps is not None else math.inf

    return min(sorted(common), key=lambda key: (distance(key), mean_accuracy(key)))


def _training_panel(axis: Axes, data: ExperimentData, setting: str | None, read: Reading) -> None:
    boundary = None
    keys: list[str] = []
    for colour, model in zip(COLOURS, data.models(), strict=False):
        group = data.group(setting, model)
        if not group:
            continue
        xs = [record["global_epoch"] for record in group[0].epochs]
        for field, style, label in (("test_acc", "-", "test"), ("train_eval_acc", ":", "train")):
            runs = [[100 * r.get(field, float("nan")) for r in t.epochs] for t in group]
            _band(axis, xs, runs, colour, linestyle=style, label=f"{model} {label} (clean)")
        # Each phase may attack differently after its epochs: one dashed segment per phase,
        # at the ε nearest the last phase's (the one the model is trained for).
        last = [r for t in group for r in t.epochs if r["phase"] == group[0].phase_order[-1]]
        last_key = epoch_attack_key(last)
        near = None if last_key is None else label_eps(last_key)
        for phase in group[0].phase_order:
            records = [r for t in group for r in t.epochs if r["phase"] == phase]
            key = epoch_attack_key(records, near)
            if key is None:
                continue
            keys += [key] if key not in keys else []
            runs = [
                [100 * r["attacks"][key]["robust_acc"] for r in t.epochs if r["phase"] == phase]
                for t in group
            ]
            phase_xs = [r["global_epoch"] for r in group[0].epochs if r["phase"] == phase]
            tag = f"{model} test under attack" if phase == group[0].phase_order[-1] else None
            _band(axis, phase_xs, runs, colour, linestyle="--", label=tag)
        before = [r["global_epoch"] for r in group[0].epochs if r["phase"] == read.before]
        boundary = max(before) if before else boundary
    if boundary is not None:
        axis.axvline(boundary + 0.5, color="grey", linewidth=0.8)
        # Half way up, clear of the legend in the lower left corner.
        axis.text(boundary + 0.6, 50, "adversarial training →", fontsize=7, color="grey")
    axis.set_xlabel("epoch")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 100)
    attacked = f"\n(dashed: {'; '.join(keys)})" if keys else ""
    axis.set_title(f"Training statistics{attacked}", fontsize=9)
    axis.legend(fontsize=6, loc="lower left", ncol=2)


def _attack_panel(axis: Axes, data: ExperimentData, setting: str | None, read: Reading) -> None:
    label = None
    for colour, model in zip(COLOURS, data.models(), strict=False):
        for phase, style in ((read.before, "--"), (read.after, "-")):
            runs = []
            for trial in data.group(setting, model):
                numbers = trial.phases.get(phase)
                found = None if numbers is None else numbers.attack(read.adversary)
                if found is not None and found[1].get("trace"):
                    label = found[0]
                    runs.append([100 * value for value in found[1]["trace"]])
            if runs:
                xs = list(range(max(len(run) for run in runs)))
                tag = "before" if phase == read.before else "after"
                _band(axis, xs, runs, colour, linestyle=style, label=f"{model} {tag} AT")
    axis.set_xlabel("attack iteration")
    axis.set_ylabel("adversary success rate (%)")
    axis.set_ylim(0, 100)
    if label is None:  # no phase-end PGD with a trace: say so instead of an empty legend
        axis.set_title("Attack statistics (no phase-end attack traced)", fontsize=9)
        return
    axis.set_title(f"Attack statistics ({label})", fontsize=9)
    axis.legend(fontsize=6, loc="upper left")


def training_figure(data: ExperimentData, setting: str | None) -> bytes:
    figure = Figure(figsize=(6.4, 4.2))
    _training_panel(figure.subplots(), data, setting, reading(data))
    return _png(figure)


def attack_figure(data: ExperimentData, setting: str | None) -> bytes:
    figure = Figure(figsize=(6.4, 4.2))
    _attack_panel(figure.subplots(), data, setting, reading(data))
    return _png(figure)


def combined_figure(data: ExperimentData, setting: str | None) -> bytes:
    figure = Figure(figsize=(12.0, 4.4))
    left, right = figure.subplots(1, 2)
    read = reading(data)
    _training_panel(left, data, setting, read)
    _attack_panel(right, data, setting, read)
    if setting is not None:
        figure.suptitle(setting, fontsize=10)
    return _png(figure)


def calibration_figure(calibration: dict[str, Any]) -> bytes:
    figure = Figure(figsize=(6.4, 4.0))
    axis = figure.subplots()
    xs = [point[0] for point in calibration["curve"]]
    ys = [100 * point[1] for point in calibration["curve"]]
    axis.plot(xs, ys, color=COLOURS[0], drawstyle="steps-post", label="found fooled at ε")
    if all(len(point) > 2 for point in calibration["curve"]):  # older records: no band
        possible = [100 * point[2] for point in calibration["curve"]]
        axis.fill_between(
            xs,
            ys,
            possible,
            step="post",
            color=COLOURS[0],
            alpha=0.2,
            linewidth=0,
            label="not ruled out (bisection brackets)",
        )
        axis.legend(fontsize=7, loc="upper left")
    target, eps = 100 * calibration["target_success"], calibration["eps"]
    axis.axhline(target, color="grey", linewidth=0.8, linestyle=":")
    axis.axvline(eps, color=COLOURS[1], linewidth=0.8)
    axis.text(eps, 3, f" ε* = {eps:.4f}", color=COLOURS[1], fontsize=8)
    axis.set_xlabel("ε (L∞, pixel units)")
    axis.set_ylabel("success rate (%)")
    axis.set_ylim(0, 100)
    axis.set_title(f"Calibration: {calibration['attack']} success vs ε, pooled", fontsize=9)
    return _png(figure)
