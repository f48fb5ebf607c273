"""``robustlab sweep status``: every planned trial's state, from the index and the disk.

The index says what the driving process last recorded; the disk has the final word on
"done" (a results file), and a "running" trial whose process is gone reads "interrupted".
Trials the index knows but the plan no longer lists are shown as "not in plan".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from robustlab.experiments.plan import build_plan
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.index import IndexRow, TrialIndex


@dataclass(frozen=True)
class TrialStatus:
    name: str
    status: str
    point: str
    seconds: float | None
    result: str
    """Final clean test accuracy and the last phase's worst case, or the error."""


def trial_statuses(directory: Path) -> list[TrialStatus]:
    folder = ExperimentDirectory(directory)
    plan = build_plan(folder.read_config())
    rows = {row.name: row for row in TrialIndex(folder.index_file).rows()}
    statuses = []
    for spec in plan.trials:
        row = rows.pop(spec.name, None)
        status = row.shown_status if row is not None else "pending"
        if folder.trial(spec.name).is_finished:
            status = "done"
        statuses.append(
            TrialStatus(
                name=spec.name,
                status=status,
                point=spec.point.label or "",
                seconds=row.seconds if row is not None else None,
                result=_result(row, status),
            )
        )
    for row in rows.values():
        if row.role == "trial":
            statuses.append(TrialStatus(row.name, "not in plan", "", row.seconds, ""))
    return statuses


def _result(row: IndexRow | None, status: str) -> str:
    if row is None:
        return ""
    if status == "failed":
        return (row.error or "")[:120]
    summary = row.summary or {}
    parts = []
    if summary.get("test_acc") is not None:
        parts.append(f"test {summary['test_acc']:.2%}")
    ends = summary.get("phase_end") or []
    if ends and ends[-1].get("worst_case_acc") is not None:
        last = ends[-1]
        parts.append(f"worst case after {last['phase']} {last['worst_case_acc']:.2%}")
    return ", ".join(parts)
