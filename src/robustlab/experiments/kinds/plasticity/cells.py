"""Each finished trial as one point of the map: where it sits (depth, width, size) and what
it measured (clean accuracy before and after, robust accuracy, robust fit, the cost)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab.config import TrialSpec
from robustlab.experiments.collect import ExperimentData, TrialSummary
from robustlab.experiments.distillation_probe import DISTILLATION_FILE
from robustlab.experiments.kinds.plasticity.options import PlasticityMapOptions
from robustlab.experiments.plasticity_probe import EVALUATION_FILE
from robustlab.models import model_options


@dataclass(frozen=True)
class Cell:
    """One trial. Accuracies are shares in [0, 1]; ``cost`` is in percentage points."""

    trial: str
    seed: int
    depth: float
    width: float
    parameters: int
    multiply_adds: int
    clean_before: float | None
    clean_after: float | None
    robust: float | None
    robust_fit: float | None
    probe: dict[str, Any] | None
    """``plasticity-evaluation.json``, when measured."""
    distillation: dict[str, Any] | None = None
    """``plasticity-distillation.json``, when distilled."""

    @property
    def cost(self) -> float | None:
        """The robustness cost: clean test accuracy lost to adversarial training, points."""
        if self.clean_before is None or self.clean_after is None:
            return None
        return 100 * (self.clean_before - self.clean_after)


def map_cells(data: ExperimentData, options: PlasticityMapOptions) -> list[Cell]:
    """The finished trials as cells, in plan order."""
    phases = [phase.name for phase in data.config.phases]
    before = options.before_phase or phases[0]
    after = options.after_phase or phases[-1]
    specs = {spec.name: spec for spec in data.plan.trials}
    cells = []
    for trial in data.trials:
        spec = specs[trial.trial]
        depth, width = _axis(spec, trial, options.depth), _axis(spec, trial, options.width)
        probe = _read(data.directory / trial.trial / EVALUATION_FILE)
        cells.append(
            Cell(
                trial=trial.trial,
                seed=trial.seed,
                depth=depth,
                width=width,
                parameters=trial.parameters,
                multiply_adds=data.plan.facts[trial.trial].multiply_adds,
                clean_before=_clean(trial, before),
                clean_after=_clean(trial, after),
                robust=_robust(trial, after, options.robust_attack),
                robust_fit=None if probe is None else float(probe["robust_fit"]["robust_accuracy"]),
                probe=probe,
                distillation=_read(data.directory / trial.trial / DISTILLATION_FILE),
            )
        )
    return cells


def _read(path: Path) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (
        json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    )
    return found


def _axis(spec: TrialSpec, trial: TrialSummary, field: str) -> float:
    """The trial's value of a swept (or fixed) field: the sweep's value, else the model's
    option as configured, else the model's default."""
    if field in trial.point:
        return float(trial.point[field])
    option = field.removeprefix("model.options.")
    model = spec.base.model
    if option in model.options:
        return float(model.options[option])
    return float(model_options(model.name)[option])


def _clean(trial: TrialSummary, phase: str) -> float | None:
    numbers = trial.phases.get(phase)
    return None if numbers is None else numbers.test_acc


def _robust(trial: TrialSummary, phase: str, prefix: str) -> float | None:
    numbers = trial.phases.get(phase)
    found = None if numbers is None else numbers.attack(prefix)
    return None if found is None else float(found[1]["robust_acc"])


@dataclass(frozen=True)
class GridPoint:
    """One (depth, width) of the map, over seeds."""

    depth: float
    width: float
    cells: list[Cell]

    @property
    def parameters(self) -> int:
        return self.cells[0].parameters

    @property
    def multiply_adds(self) -> int:
        return self.cells[0].multiply_adds

    def values(self, measure: str) -> list[float]:
        found = [getattr(cell, measure) for cell in self.cells]
        return [float(value) for value in found if value is not None]

    def mean(self, measure: str) -> float | None:
        found = self.values(measure)
        return statistics.fmean(found) if found else None


def grid_points(cells: Sequence[Cell]) -> list[GridPoint]:
    """Cells grouped by (depth, width), sorted by depth then width."""
    groups: dict[tuple[float, float], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.depth, cell.width), []).append(cell)
    return [GridPoint(depth, width, groups[(depth, width)]) for depth, width in sorted(groups)]
