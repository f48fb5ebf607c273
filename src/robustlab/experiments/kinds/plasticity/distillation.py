"""The distillation probe's part of the report: robust accuracy a narrower student keeps of its
teacher's, whether deeper teachers lose less, and whether the student beats its own shape
trained directly (the map's grid point of the student's depth and width)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from scipy import stats

from robustlab.experiments.document import Callout, Section
from robustlab.experiments.kinds.plasticity.cells import Cell, GridPoint, grid_points
from robustlab.experiments.kinds.plasticity.compression import attack_label
from robustlab.experiments.kinds.plasticity.fit import depth_verdict, fit_rows
from robustlab.experiments.tables import Spread, Table, spread


def _record(cell: Cell) -> dict[str, Any]:
    assert cell.distillation is not None
    return cell.distillation


def student_width(cell: Cell) -> float:
    """The width of the student the cell's model taught."""
    record = _record(cell)
    return float(record["student"]["options"][record["settings"]["width_option"]])


def same_shape(cell: Cell, cells: Sequence[Cell]) -> list[Cell]:
    """The map's own models of the cell's student's depth and width, trained directly (none
    if the map has no such grid point)."""
    width = student_width(cell)
    return [
        other
        for other in cells
        if other.depth == cell.depth and math.isclose(other.width, width, rel_tol=1e-9)
    ]


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of at least two values."""
    mean = statistics.fmean(values)
    half = float(stats.t.ppf((1 + level) / 2, len(values) - 1)) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return mean - half, mean + half


def _lost(cell: Cell) -> float:
    """Points of robust accuracy the student has below its teacher."""
    record = _record(cell)
    teacher, student = record["teacher"], record["distilled"]
    return 100 * (float(teacher["robust_accuracy"]) - float(student["robust_accuracy"]))


def _direct_robust(cell: Cell, cells: Sequence[Cell]) -> list[float]:
    """Robust accuracy of the student's shape trained directly, under the distillation's
    attack (each of those models scored as a teacher in its own record)."""
    return [
        float(other.distillation["teacher"]["robust_accuracy"])
        for other in same_shape(cell, cells)
        if other.distillation is not None
    ]


def _row(point: GridPoint, cells: Sequence[Cell]) -> list[str]:
    records = [_record(cell) for cell in point.cells]
    direct = _direct_robust(point.cells[0], cells)
    return [
        f"{point.depth:g}",
        f"{point.width:g}",
        f"{student_width(point.cells[0]):g}",
        f"{records[0]['distilled']['parameters']:,}",
        spread([r["teacher"]["robust_accuracy"] for r in records]).text(),
        spread([r["distilled"]["robust_accuracy"] for r in records]).text(),
        spread([r["distilled"]["clean_accuracy"] for r in records]).text(),
        Spread([_lost(cell) for cell in point.cells]).text(signed=True),
        spread(direct).text() if direct else "–",
    ]


def _against_direct(distilled: Sequence[Cell], cells: Sequence[Cell]) -> Callout | None:
    """Mean gain of the distilled student over the same shape trained directly, in points."""
    gains = []
    for cell in distilled:
        direct = _direct_robust(cell, cells)
        if direct:
            student = float(_record(cell)["distilled"]["robust_accuracy"])
            gains.append(100 * (student - statistics.fmean(direct)))
    if not gains:
        return None
    gain = Spread(gains)
    answer = "Undecided"
    interval = ""
    if len(gains) > 1:
        low, high = mean_interval(gains)
        interval = f", 95% interval of the mean {low:+.2f} to {high:+.2f}"
        answer = "Yes" if low > 0 else "No" if high < 0 else "Undecided"
    return Callout(
        "Does a robust teacher pass on more robustness than its student's shape learns by "
        "adversarial training alone?",
        f"{answer}: the student is {gain.text(signed=True)} points of robust accuracy from the "
        f"map's own model of its shape (mean ± std over {len(gains)} students, each against "
        f"the mean of that shape's seeds{interval}).",
    )


def distillation_section(cells: Sequence[Cell]) -> Section | None:
    distilled = [cell for cell in cells if cell.distillation is not None]
    if not distilled:
        return None
    first = _record(distilled[0])
    settings = first["settings"]
    table = Table(
        title="Distillation: robust accuracy of a narrower student (%; lost in points)",
        columns=[
            "depth",
            "width",
            "student width",
            "student parameters",
            "teacher robust",
            "student robust",
            "student clean",
            "lost",
            "student's shape trained directly: robust",
        ],
        rows=[_row(point, cells) for point in grid_points(distilled)],
        label_columns=2,
        note=f"Robust accuracy under {attack_label(first['attack'])} on the first "
        f"{first['images']} test images, the same for teacher and student; clean accuracy on "
        "the whole test split; mean ± std over seeds. The student has the teacher's depth and "
        f"{settings['width_factor']:g}× its width and is trained from scratch for "
        f"{settings['steps']} steps (batch {settings['batch_size']}, Adam {settings['lr']:g}) "
        "by adversarial distillation: KL from the teacher's clean prediction to the student's "
        "on the teacher's training attack run on the student, temperature "
        f"{settings['temperature']:g}. Last column: the map's own adversarially trained "
        "models of the student's depth and width, scored by the same attack.",
    )
    rows = [(cell, _lost(cell)) for cell in distilled]
    verdict = depth_verdict(fit_rows("distillation loss", rows), lower_is_better=True)
    answer = {
        "yes": "Yes: deeper teachers lose less",
        "no": "No: deeper teachers lose more",
        "undecided": "Undecided",
    }[verdict.answer]
    callouts = [
        Callout(
            "Does depth help robustness survive distillation into a narrower student?",
            f"{answer}; {verdict.text} (points of robust accuracy lost, fit "
            "a + b·depth + c·log2(teacher parameters)).",
        )
    ]
    direct = _against_direct(distilled, cells)
    if direct is not None:
        callouts.append(direct)
    return Section("Distillation as a capacity probe", [table], callouts=callouts)
