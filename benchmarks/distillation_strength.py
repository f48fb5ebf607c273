"""Is the distillation probe's attack strong enough? Every distilled student of a plasticity
map attacked again with the standard AutoAttack (APGD-CE with 5 starts, APGD-T on 9 targets,
Square with 5000 queries) on the same test images the probe scored with its own attack.

The map's report sets each student beside the map's own model of its shape, both under the
probe's attack. That model's robust accuracy under the standard AutoAttack is the map's
phase-end figure (the same first test images), so this file also makes the comparison with
both sides under the strong attack: the student's gain over its shape trained directly, mean
over students with a t-interval.

Run: ``python benchmarks/distillation_strength.py EXPERIMENT_DIR OUT.json``. Resumable: a
trial already in OUT.json is kept, and the file is rewritten (atomically) after each trial.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from robustlab.config import AttackConfig
from robustlab.evaluate.robust import robust_accuracy
from robustlab.experiments.collect import collect
from robustlab.experiments.distillation_probe import DISTILLATION_FILE, load_student
from robustlab.experiments.kinds.plasticity.cells import map_cells
from robustlab.experiments.kinds.plasticity.distillation import mean_interval, same_shape
from robustlab.experiments.plan import build_plan
from robustlab.io import atomic_write_json
from robustlab.provenance import provenance
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.runs import RunDirectory
from robustlab.train.inputs import load_trial_data


def standard_autoattack(record: dict[str, Any]) -> AttackConfig:
    """The standard AutoAttack at the probe attack's ε and norm."""
    probe = record["settings"]["attack"]
    params = probe.get("params", probe)
    budget = {key: params[key] for key in ("eps", "norm") if key in params}
    return AttackConfig.model_validate({"name": "autoattack", "version": "standard", **budget})


def check_trial(folder: Path, device: torch.device) -> dict[str, Any]:
    record = json.loads((folder / DISTILLATION_FILE).read_text(encoding="utf-8"))
    student = load_student(folder, record, device)
    data = load_trial_data(RunDirectory(folder).read_config().data)
    count = record["images"]
    images = (data.test.images[:count].to(device), data.test.labels[:count].to(device))
    attack = standard_autoattack(record)
    started = time.perf_counter()
    report = robust_accuracy(student, images, {"standard": attack.build()})
    standard = report.attacks[0].robust_accuracy
    probe = float(record["distilled"]["robust_accuracy"])
    return {
        "trial": folder.name,
        "images": count,
        "probe_attack": record["attack"],
        "probe_robust_accuracy": probe,
        "standard_attack": attack.build().describe(),
        "standard_robust_accuracy": round(standard, 6),
        "points_lower_under_standard": round(100 * (probe - standard), 3),
        "seconds": round(time.perf_counter() - started, 3),
    }


def direct_comparison(experiment: Path, rows: dict[str, Any]) -> dict[str, Any]:
    """Each student under the standard AutoAttack against the map's own models of its shape
    under the same attack (their phase-end figure, on the same first test images)."""
    plan = build_plan(ExperimentDirectory(experiment).read_config())
    cells = map_cells(collect(experiment, plan), plan.options)
    gains = []
    for cell in cells:
        row = rows.get(cell.trial)
        if row is None or cell.distillation is None:
            continue
        direct = [other.robust for other in same_shape(cell, cells) if other.robust is not None]
        if direct:
            row["direct_standard_robust_accuracy"] = round(statistics.fmean(direct), 6)
            gains.append(100 * (row["standard_robust_accuracy"] - statistics.fmean(direct)))
    attack = {"direct_attack": plan.options.robust_attack}
    if len(gains) < 2:
        return {**attack, "students": len(gains)}
    low, high = mean_interval(gains)
    return {
        **attack,
        "students": len(gains),
        "mean_gain_points": round(statistics.fmean(gains), 3),
        "std_gain_points": round(statistics.stdev(gains), 3),
        "interval_95_points": [round(low, 3), round(high, 3)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="a plasticity-map experiment folder")
    parser.add_argument("out", type=Path, help="results file (JSON)")
    parser.add_argument("--device", default="cpu")
    arguments = parser.parse_args()
    device = torch.device(arguments.device)
    folders = sorted(p.parent for p in arguments.experiment.glob(f"*/{DISTILLATION_FILE}"))
    if not folders:
        raise SystemExit(f"{arguments.experiment}: no {DISTILLATION_FILE} in any trial folder")
    done: dict[str, Any] = (
        json.loads(arguments.out.read_text(encoding="utf-8")) if arguments.out.exists() else {}
    )
    rows = {row["trial"]: row for row in done.get("students", [])}
    for folder in folders:
        if folder.name in rows:
            continue
        rows[folder.name] = check_trial(folder, device)
        row = rows[folder.name]
        print(
            f"{row['trial']}: {100 * row['probe_robust_accuracy']:.1f}% under the probe's attack, "
            f"{100 * row['standard_robust_accuracy']:.1f}% under the standard AutoAttack "
            f"({row['seconds']:.0f} s)",
            flush=True,
        )
        write(arguments.out, arguments.experiment, rows, None)
    write(arguments.out, arguments.experiment, rows, direct_comparison(arguments.experiment, rows))


def write(path: Path, experiment: Path, rows: dict[str, Any], direct: Any) -> None:
    gaps = [row["points_lower_under_standard"] for row in rows.values()]
    atomic_write_json(
        path,
        {
            "experiment": experiment.name,
            "students": [rows[name] for name in sorted(rows)],
            "largest_gap_points": max(gaps),
            "mean_gap_points": round(statistics.fmean(gaps), 3),
            "student_minus_direct_under_standard": direct,
            "provenance": provenance(),
        },
    )


if __name__ == "__main__":
    main()
