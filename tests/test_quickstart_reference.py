"""configs/quickstart.yaml gives the figures it gave before the experiment engine was rebuilt
(tests/data/quickstart-reference.json: every metrics line, the calibrated ε, every report
cell), bit for bit on a machine like the one that recorded them.

Float reductions depend on the thread count and on the CPU's vector instructions, so the
comparison is exact where both match the reference's (recorded in it) and otherwise checks
the same trials, labels and calibrated ε to within what a different machine can move.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.config import load_experiment
from robustlab.experiments import run_experiment
from robustlab.store.runs import RunDirectory
from tests.test_experiments import strip_times

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((ROOT / "tests" / "data" / "quickstart-reference.json").read_text())
FEATURES = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma"}


def cpu_features() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            return sorted(set(line.split(":", 1)[1].split()) & FEATURES)
    return []


def same_machine_kind() -> bool:
    machine = REFERENCE["machine"]
    return cpu_features() == machine["cpu_features"] and torch.__version__ == machine["torch"]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(REFERENCE["machine"]["torch_threads"])
    try:
        out = tmp_path_factory.mktemp("quickstart")
        yield run_experiment(load_experiment(ROOT / "configs" / "quickstart.yaml"), out).directory
    finally:
        torch.set_num_threads(before)


def report_cells(directory: Path) -> list[dict[str, str]]:
    rows = csv.DictReader((directory / "report" / "report.csv").read_text().splitlines())
    return [
        {"table": row["table"], "row": row["row"], "column": row["column"], "text": row["text"]}
        for row in rows
        if row["section"] != "Context" or row["table"] != "Training cost"
    ]


def test_quickstart_metrics_match_the_recorded_figures(quickstart: Path) -> None:
    calibration = json.loads((quickstart / "calibration.json").read_text())
    for model, recorded in REFERENCE["trials"].items():
        run = RunDirectory(quickstart / f"{model}-s0")
        metrics: list[dict[str, Any]] = strip_times(run.read_metrics())
        final = run.read_results()["final"]
        if same_machine_kind():
            assert calibration["eps"] == REFERENCE["calibrated_eps"]
            assert calibration["curve"] == REFERENCE["calibration_curve"]
            assert metrics == recorded["metrics"], f"{model}: metrics differ from the record"
            assert final == recorded["final"]
        else:  # another CPU: the same shape, numbers within a machine's drift
            assert abs(calibration["eps"] - REFERENCE["calibrated_eps"]) <= 0.02
            assert [m.get("event") for m in metrics] == [
                m.get("event") for m in recorded["metrics"]
            ]
            assert abs(final["test_acc"] - recorded["final"]["test_acc"]) <= 0.03


def test_quickstart_report_numbers_match_the_recorded_report(quickstart: Path) -> None:
    cells = report_cells(quickstart)
    recorded = REFERENCE["report_cells"]
    if same_machine_kind():
        assert cells == recorded
    else:
        assert [(c["table"], c["row"], c["column"]) for c in cells] == [
            (c["table"], c["row"], c["column"]) for c in recorded
        ]
