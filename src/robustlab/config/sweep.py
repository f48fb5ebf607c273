"""Sweeps: variants of an experiment over named fields, written as a grid and/or a list.

``grid: {model.options.depth: [2, 3, 4], model.options.width: [0.5, 1]}`` is every
combination; ``points: [{threat.eps: 8/255}, {threat.eps: calibrated, label: calibrated}]``
lists variants one by one. With both, every listed point is combined with every grid point;
``extra_points`` are run as written, beside the grid (reference models, say).
Fields are named, never indexed: a phase by its name (``phases.adversarial.epochs``, or
``phases.*.optimizer.weight_decay`` for every phase, or ``phases`` for a point's own list
of phases), a model option for every model of the
experiment (``model.options.width``). Each point gets a label from the values it varies
(``depth3-width0.5``), which trial names and reports use.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator, model_validator

from robustlab.config.base import FRACTION, NAME_PATTERN, StrictModel

ROOTS = ("seed", "data", "model", "threat", "phases", "evaluation")
"""Where a sweep may reach: everything that is per trial. Calibration, the executor and the
report are per experiment and cannot vary within one."""
LABEL_KEY = "label"


class SweepConfig(StrictModel):
    """Variants of the experiment: a grid over named fields and/or a list of points."""

    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="field → values; every combination is a variant"
    )
    points: list[dict[str, Any]] = Field(
        default_factory=list,
        description="variants one by one: field → value, and an optional label",
    )
    extra_points: list[dict[str, Any]] = Field(
        default_factory=list,
        description="variants run as written, not combined with the grid (e.g. reference "
        "models beside a grid): field → value, and an optional label",
    )

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in grid.items():
            check_path(path)
            if not values:
                raise ValueError(f"{path}: an empty list of values gives no variants")
        return grid

    @field_validator("points", "extra_points")
    @classmethod
    def _point_fields(cls, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, point in enumerate(points):
            fields = [key for key in point if key != LABEL_KEY]
            if not fields:
                raise ValueError(f"points.{index}: names no field to vary")
            for path in fields:
                check_path(path)
            label = point.get(LABEL_KEY)
            if label is not None and not re.match(NAME_PATTERN, str(label)):
                raise ValueError(
                    f"points.{index}.label: {label!r} must match {NAME_PATTERN} (a folder name)"
                )
        return points

    @model_validator(mode="after")
    def _not_empty(self) -> SweepConfig:
        if not self.grid and not self.points and not self.extra_points:
            raise ValueError("a sweep needs a grid, points or extra_points")
        shared = set(self.grid) & {key for point in self.points for key in point}
        if shared:
            raise ValueError(f"{', '.join(sorted(shared))}: varied by both the grid and points")
        return self


def check_path(path: str) -> None:
    parts = path.split(".")
    if parts[0] not in ROOTS or any(not part for part in parts):
        raise ValueError(
            f"{path!r}: a sweep varies fields under {', '.join(ROOTS)} "
            "(e.g. model.options.depth, threat.eps, phases.adversarial.epochs)"
        )
    if parts[0] == "seed" and len(parts) > 1:
        raise ValueError(f"{path!r}: seed is a number, it has no fields")
    if parts[0] == "phases" and len(parts) == 2:
        raise ValueError(
            f"{path!r}: name the phase and its field, e.g. phases.adversarial.epochs "
            "(phases.*.FIELD for every phase), or give the whole list as phases"
        )


@dataclass(frozen=True)
class SweepPoint:
    """One variant: the value of every varied field, and the label trial names carry."""

    values: tuple[tuple[str, Any], ...]
    label: str | None

    def get(self, path: str) -> Any:
        return dict(self.values).get(path)


def sweep_points(sweep: SweepConfig | None) -> list[SweepPoint]:
    """The sweep's variants in order (grid in the order written, last field fastest, each
    listed point combined with it), then the extra points as written; one unlabelled point
    when there is no sweep."""
    if sweep is None:
        return [SweepPoint(values=(), label=None)]
    grid = [
        tuple(zip(sweep.grid, combination, strict=True))
        for combination in itertools.product(*sweep.grid.values())
    ]
    listed = [_written(point) for point in sweep.points] or [((), None)]
    combined = []  # (values, label, whether the grid's values follow the label)
    if sweep.grid or sweep.points:
        combined = [
            (values + cell, label, True) for values, label in listed for cell in grid or [()]
        ]
    combined += [(*_written(point), False) for point in sweep.extra_points]
    paths = list(dict.fromkeys(path for values, _, _ in combined for path, _ in values))
    short = short_names(paths)
    points = []
    for values, label, with_grid in combined:
        explicit = [str(label)] if label is not None else []
        derived = [value_label(short[path], value) for path, value in values]
        if label is not None:  # the label names the point; the grid's values follow
            derived = [
                value_label(short[path], v)
                for path, v in values
                if with_grid and path in sweep.grid
            ]
        points.append(SweepPoint(values=values, label="-".join(explicit + derived) or None))
    return points


def _written(point: dict[str, Any]) -> tuple[tuple[tuple[str, Any], ...], str | None]:
    """A listed point's values (without its label) and its label."""
    return tuple((k, v) for k, v in point.items() if k != LABEL_KEY), point.get(LABEL_KEY)


def short_names(paths: list[str]) -> dict[str, str]:
    """Each path's shortest dotted suffix that no other path ends with (depth, width, eps)."""
    names = {}
    for path in paths:
        parts = path.split(".")
        for size in range(1, len(parts) + 1):
            suffix = ".".join(parts[-size:])
            if not any(other != path and other.endswith("." + suffix) for other in paths):
                break
        names[path] = suffix.replace("*", "all")
    return names


def value_label(name: str, value: Any) -> str:
    """``depth3``, ``eps0.1``; a text value stands alone (``calibrated``, ``mnist``), a mapping
    by its type or name (``trades``)."""
    if isinstance(value, dict):
        text = str(value.get("type", value.get("name", name)))
        return _safe(text)
    if isinstance(value, bool):
        return _safe(f"{name}-{str(value).lower()}")
    if isinstance(value, int | float):
        return _safe(f"{name}{value:g}")
    if isinstance(value, str) and FRACTION.match(value):  # a budget written 8/255
        return _safe(f"{name}{value.replace(' ', '')}")
    return _safe(str(value))


def _safe(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned or "x"


def apply_value(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in a trial's config data (phases addressed by name, ``*`` for all).

    ``data`` holds only what was written (unset fields are absent), so missing mappings are
    created on the way; whether the field exists is for the schema to say when the result is
    validated.
    """
    parts = path.split(".")
    if path == "phases":  # a point with phases of its own (e.g. a teacher before a student)
        data["phases"] = value
        return
    if parts[0] == "phases":
        phases = data.get("phases", [])
        chosen = [p for p in phases if parts[1] in ("*", p.get("name"))]
        if not chosen:
            names = ", ".join(str(p.get("name")) for p in phases)
            raise ValueError(f"{path!r}: no phase named {parts[1]!r} (phases: {names})")
        for phase in chosen:
            _set(phase, parts[2:], value, path)
        return
    _set(data, parts, value, path)


def _set(node: dict[str, Any], parts: list[str], value: Any, path: str) -> None:
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"{path!r}: {part} is a value ({child!r}), not a mapping")
        node = child
    node[parts[-1]] = value
