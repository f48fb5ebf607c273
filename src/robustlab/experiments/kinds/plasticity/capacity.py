"""The capacity part of the map's report, when ``robustlab capacity`` has measured the
experiment's architectures (``capacity.json``, ``capacity-robust.json`` in its folder).

Memorisation capacity is the thesis's Φ made measurable: the report sets it beside the grid,
fits ``log2 Φ = a + b·depth + c·log2(parameters)`` (does depth raise capacity at equal size:
Hypothesis 2) and says how closely the robustness cost follows it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.experiments.document import Callout, Section
from robustlab.experiments.kinds.plasticity.cells import Cell, GridPoint
from robustlab.experiments.kinds.plasticity.fit import depth_verdict, fit_rows
from robustlab.experiments.kinds.plasticity.options import PlasticityMapOptions
from robustlab.experiments.tables import Table

FILES = (("memorisation", "capacity.json"), ("robust", "capacity-robust.json"))


def _results(folder: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for measure, name in FILES:
        path = folder / name
        if path.exists():
            found[measure] = json.loads(path.read_text(encoding="utf-8"))
    return found


def _at(result: dict[str, Any], options: PlasticityMapOptions) -> tuple[float, float] | None:
    chosen = result["model"]["options"]
    depth = chosen.get(options.depth.removeprefix("model.options."))
    width = chosen.get(options.width.removeprefix("model.options."))
    return None if depth is None or width is None else (float(depth), float(width))


def capacity_section(
    folder: Path, points: Sequence[GridPoint], options: PlasticityMapOptions
) -> Section | None:
    stored = _results(folder)
    if not stored:
        return None
    by_point: dict[str, dict[tuple[float, float], dict[str, Any]]] = {}
    settings = {}
    for measure, data in stored.items():
        settings[measure] = data["settings"]
        for entry in data["targets"].values():
            result = entry.get("result")
            where = None if result is None else _at(result, options)
            if where is not None:
                by_point.setdefault(measure, {})[where] = result
    rows = []
    for point in points:
        row = [f"{point.depth:g}", f"{point.width:g}", f"{point.parameters:,}"]
        for measure, _ in FILES:
            result = by_point.get(measure, {}).get((point.depth, point.width))
            row.append(_capacity_text(result))
        rows.append(row)
    table = Table(
        title="Capacity: the largest training set fitted within the budget (images)",
        columns=["depth", "width", "parameters", "memorisation (random labels)", "robust"],
        rows=rows,
        label_columns=2,
        note=_settings_note(settings),
    )
    callouts = []
    memorised = by_point.get("memorisation", {})
    if memorised:
        callouts += _capacity_callouts(memorised, points)
    return Section("Capacity (Φ)", [table], callouts=callouts)


def _capacity_text(result: dict[str, Any] | None) -> str:
    if result is None:
        return "–"
    bound = "≥ " if result["lower_bound"] else ""
    spread = result["capacity_std"]
    tail = "" if spread is None else f" ± {spread:,.0f}"
    return f"{bound}{result['capacity_mean']:,.0f}{tail}"


def _settings_note(settings: dict[str, dict[str, Any]]) -> str:
    parts = []
    for measure, chosen in settings.items():
        floor = f", at least {chosen['min_steps']} steps" if chosen.get("min_steps") else ""
        parts.append(
            f"{measure}: fitted = {chosen['threshold']:.0%} training accuracy within "
            f"{chosen['epochs']} epochs{floor} (Adam {chosen['lr']:g}, "
            f"batch {chosen['batch_size']}), "
            f"bisection over {chosen['min_images']}–{chosen['max_images']} images to "
            f"{chosen['resolution']:.0%}, {chosen['repeats']} repeats (mean ± std)"
        )
    return "; ".join(parts) + ". From robustlab capacity (capacity.json, capacity-robust.json)."


def _capacity_callouts(
    memorised: dict[tuple[float, float], dict[str, Any]], points: Sequence[GridPoint]
) -> list[Callout]:
    rows = []
    for (depth, width), result in memorised.items():
        for repeat in result["repeats"]:
            cell = Cell(
                trial=result["label"],
                seed=int(repeat["repeat"]),
                depth=depth,
                width=width,
                parameters=int(result["parameters"]),
                multiply_adds=0,
                clean_before=None,
                clean_after=None,
                robust=None,
                robust_fit=None,
                probe=None,
            )
            rows.append((cell, math.log2(repeat["capacity"])))
    fit = fit_rows("log2 capacity", rows)
    verdict = depth_verdict(fit, lower_is_better=False)
    callouts = [
        Callout(
            "Does depth raise memorisation capacity more than width, at equal parameter count?",
            f"{verdict.answer.capitalize()}: {verdict.text} (log2 of images fitted; +1 is twice "
            "the capacity).",
        )
    ]
    pairs = []
    for point in points:
        found = memorised.get((point.depth, point.width))
        cost = point.mean("cost")
        if found is not None and cost is not None:
            pairs.append((math.log2(found["capacity_mean"]), cost))
    if len(pairs) >= 3 and statistics.pstdev(p[0] for p in pairs) > 0:
        correlation = float(np.corrcoef([p[0] for p in pairs], [p[1] for p in pairs])[0, 1])
        callouts.append(
            Callout(
                "How closely does the robustness cost follow capacity?",
                f"Pearson r = {correlation:+.2f} between log2 memorisation capacity and the "
                f"mean cost over {len(pairs)} grid points (negative: more capacity, less cost).",
            )
        )
    return callouts
