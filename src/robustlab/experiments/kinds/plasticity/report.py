"""The plasticity map's report: every trial, the grid over seeds, the iso-parameter
comparison, the fit and its verdict, the capacity, compression and distillation probes, and
the published anchors."""

from __future__ import annotations

from collections.abc import Sequence

from robustlab.experiments.collect import ExperimentData
from robustlab.experiments.document import Callout, Report, Section
from robustlab.experiments.kinds.plasticity.capacity import capacity_section
from robustlab.experiments.kinds.plasticity.cells import Cell, GridPoint, grid_points, map_cells
from robustlab.experiments.kinds.plasticity.compression import compression_section
from robustlab.experiments.kinds.plasticity.distillation import distillation_section
from robustlab.experiments.kinds.plasticity.figures import against_size, heatmaps
from robustlab.experiments.kinds.plasticity.fit import (
    TERMS,
    LinearFit,
    depth_verdict,
    fit_measure,
    iso_parameter_rows,
)
from robustlab.experiments.kinds.plasticity.options import PlasticityMapOptions
from robustlab.experiments.tables import Spread, Table, spread

MEASURES = (
    ("cost", "robustness cost (points)", 1.0),
    ("robust", "robust accuracy (points)", 100.0),
    ("robust_fit", "robust fit (points)", 100.0),
)
"""Measure, its name, and the scale that puts it in percentage points."""


MEASURE_COLUMNS = ("multiply-adds", "clean before", "clean after", "cost", "robust", "robust fit")
"""The columns both the trials table and the grid table end with."""


def plasticity_report(data: ExperimentData, options: PlasticityMapOptions) -> Report:
    cells = map_cells(data, options)
    points = grid_points(cells)
    robust_label = _robust_label(data, options)
    fitted = [cell.probe["robust_fit"]["images"] for cell in cells if cell.probe is not None]
    robust_label += (
        f". Robust fit: accuracy, in eval mode, on the training attack's examples of the first "
        f"{max(fitted)} training images"
        if fitted
        else ". Robust fit: not measured yet"
    )
    sections = [
        Section("Every trial", [_trials_table(cells, robust_label)]),
        Section(
            "The map (mean ± std over seeds)",
            [_points_table(points, robust_label)],
            figures={"heatmaps.png": heatmaps(points), "against-size.png": against_size(points)}
            if points
            else {},
        ),
    ]
    fits = {measure: fit_measure(cells, measure, scale) for measure, _, scale in MEASURES}
    verdict = depth_verdict(fits["cost"], lower_is_better=True)
    robust_verdict = depth_verdict(fits["robust"], lower_is_better=False)
    sections.append(
        Section(
            "Depth or width, at equal parameter count",
            [
                _iso_table(points, "cost", "robustness cost (points)", 1.0),
                _iso_table(points, "robust", "robust accuracy (%)", 100.0),
                _fits_table(fits),
            ],
            callouts=[
                Callout(
                    "Does depth lower the robustness cost more than width, at equal parameter "
                    "count?",
                    f"{verdict.answer.capitalize()}: {verdict.text}.",
                ),
                Callout(
                    "Does depth raise robust accuracy more than width, at equal parameter count?",
                    f"{robust_verdict.answer.capitalize()}: {robust_verdict.text} (points of "
                    "robust accuracy).",
                ),
            ],
        )
    )
    for extra in (
        capacity_section(data.directory, points, options),
        compression_section(cells),
        distillation_section(cells),
    ):
        if extra is not None:
            sections.append(extra)
    if options.published:
        rows = [[item.source, item.setting, item.figure] for item in options.published]
        sections.append(
            Section(
                "Published anchors",
                [
                    Table(
                        "Quoted from the papers, not measured here",
                        ["source", "setting", "figure"],
                        rows,
                    )
                ],
            )
        )
    return Report(
        title=options.title or data.config.description or data.config.name,
        paragraphs=[text for text in (options.notes,) if text],
        sections=sections,
        closing=None,
        missing=data.missing,
    )


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _points(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _robust_label(data: ExperimentData, options: PlasticityMapOptions) -> str:
    after = options.after_phase or data.config.phases[-1].name
    for trial in data.trials:
        numbers = trial.phases.get(after)
        found = None if numbers is None else numbers.attack(options.robust_attack)
        if numbers is not None and found is not None:
            count = found[1].get("count") or (numbers.evaluation or {}).get("images")
            return f"{found[0]} on {count} test images" if count else found[0]
    return f"no phase-end attack labelled {options.robust_attack!r}*"


def _trials_table(cells: Sequence[Cell], robust_label: str) -> Table:
    rows = [
        [
            cell.trial,
            f"{cell.depth:g}",
            f"{cell.width:g}",
            str(cell.seed),
            f"{cell.parameters:,}",
            f"{cell.multiply_adds:,}",
            _percent(cell.clean_before),
            _percent(cell.clean_after),
            _points(cell.cost),
            _percent(cell.robust),
            _percent(cell.robust_fit),
        ]
        for cell in cells
    ]
    return Table(
        title="Every trial (%; cost in points)",
        columns=["trial", "depth", "width", "seed", "parameters", *MEASURE_COLUMNS],
        rows=rows,
        note=_measures_note(robust_label),
    )


def _measures_note(robust_label: str) -> str:
    return (
        "Clean: accuracy on the whole test split at the end of the phase before and after "
        "adversarial training. Cost: clean before − clean after. Robust: "
        + robust_label
        + " (plasticity-evaluation.json). Multiply-adds: one forward pass."
    )


def _points_table(points: Sequence[GridPoint], robust_label: str) -> Table:
    rows = []
    for point in points:
        cost = point.values("cost")
        rows.append(
            [
                f"{point.depth:g}",
                f"{point.width:g}",
                str(len(point.cells)),
                f"{point.parameters:,}",
                f"{point.multiply_adds:,}",
                spread(point.values("clean_before")).text(),
                spread(point.values("clean_after")).text(),
                Spread(cost).text(signed=True),
                spread(point.values("robust")).text(),
                spread(point.values("robust_fit")).text(),
            ]
        )
    return Table(
        title="Each depth and width: mean ± std over seeds (%; cost in points)",
        columns=["depth", "width", "seeds", "parameters", *MEASURE_COLUMNS],
        rows=rows,
        label_columns=2,
        note=_measures_note(robust_label),
    )


def _iso_table(points: Sequence[GridPoint], measure: str, title: str, scale: float) -> Table:
    depths, rows = iso_parameter_rows(points, measure)
    body = [
        [f"{size:,}", *("–" if v is None else f"{scale * v:.2f}" for v in values)]
        for size, values in rows
    ]
    return Table(
        title=f"{title} at equal parameter counts, by depth",
        columns=["parameters", *(f"depth {depth:g}" for depth in depths)],
        rows=body,
        note="Each row is one grid point's parameter count; every depth's value there is "
        "interpolated linearly in log2(parameters) between its own widths (means over seeds), "
        "and left blank outside the sizes its widths cover. Read along a row: same size, "
        "more depth.",
    )


def _fits_table(fits: dict[str, LinearFit | None]) -> Table:
    rows = []
    for measure, name, _ in MEASURES:
        fit = fits[measure]
        if fit is None:
            rows.append([name, "–", "–", "–", "–", "–", "–"])
            continue
        low, high = fit.interval(1)
        terms = [
            f"{value:+.3f} ± {error:.3f}"
            for value, error in zip(fit.coefficients, fit.errors, strict=True)
        ]
        rows.append(
            [
                name,
                *terms,
                f"{low:+.3f} to {high:+.3f}",
                f"{fit.r_squared:.3f}",
                ", ".join(f"{value:+.3f}" for value in fit.per_seed_depth) or "–",
            ]
        )
    return Table(
        title="Fit: measure = a + b·depth + c·log2(parameters), least squares over every trial",
        columns=[
            "measure",
            *(f"{term} (± s.e.)" for term in TERMS),
            "depth: 95% interval",
            "R²",
            "depth, fitted per seed",
        ],
        rows=rows,
        note="Cost in points; accuracies in percentage points. b is the change from one more "
        "layer at the same parameter count; c from doubling the parameters at the same depth.",
    )
