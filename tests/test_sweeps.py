"""Sweeps end to end: configs/sweep-digits.yaml from the CLI, killed and restarted without
redoing finished trials; the trial index; and the same plan under the serial, process and Ray
executors giving the same index and metrics bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from robustlab.config import ExperimentConfig, parse_config
from robustlab.errors import ConfigError
from robustlab.experiments import run_experiment
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.index import TrialIndex
from tests.test_experiments import strip_times

ROOT = Path(__file__).resolve().parents[1]


def sweep_digits(**changes: Any) -> dict[str, Any]:
    """configs/sweep-digits.yaml, shortened: 2 + 1 epochs, fewer attack steps and images."""
    raw: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "sweep-digits.yaml").read_text())
    raw["phases"][0]["epochs"] = 2
    raw["phases"][1]["epochs"] = 1
    raw["phases"][1]["objective"]["attack"]["steps"] = 2
    raw["evaluation"]["attack_images"] = 120
    raw["evaluation"]["attacks"] = [{"name": "pgd", "steps": 3}]
    raw["evaluation"]["phase_end_attacks"] = [{"name": "pgd", "steps": 10}, {"name": "fgsm"}]
    raw["device"] = "cpu"
    raw.update(changes)
    return raw


def experiment(raw: dict[str, Any]) -> ExperimentConfig:
    return parse_config(ExperimentConfig, raw, source="test")


def robustlab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-m", "robustlab", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )


def test_sweep_digits_is_killed_and_restarted_without_redoing_finished_trials(
    tmp_path: Path,
) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep_digits()))
    folder = ExperimentDirectory(tmp_path / "runs" / "sweep-digits")
    env = {**os.environ, "COLUMNS": "300"}
    command = [sys.executable, "-m", "robustlab", "run", str(config), "--out", "runs"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    finished: list[Path] = []
    while time.monotonic() < deadline and process.poll() is None:
        finished = sorted(folder.path.glob("*/results.json"))
        if len(finished) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 2 <= len(finished) < 6, "the run must be killed part way through the sweep"
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in finished}
    metrics_before = {
        path.parent.name: (path.parent / "metrics.jsonl").read_bytes() for path in finished
    }

    status = robustlab("sweep", "status", str(folder.path), cwd=tmp_path).stdout
    assert f"{len(finished)} done" in status and "convnet-depth3-width0.5-s0" in status
    assert "interrupted" in status or "pending" in status

    rerun = robustlab("run", str(config), "--out", "runs", cwd=tmp_path).stdout
    for path, (mtime, content) in before.items():  # finished trials were not touched
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content
        assert (path.parent / "metrics.jsonl").read_bytes() == metrics_before[path.parent.name]
        assert f"{folder.path.name}/{path.parent.name}:" not in rerun  # never started again
    rows = TrialIndex(folder.index_file).rows()
    trials = [row for row in rows if row.role == "trial"]
    assert len(trials) == 6 and all(row.status == "done" for row in trials)
    assert all(row.summary and row.summary["test_acc"] > 0.3 for row in trials)
    status = robustlab("sweep", "status", str(folder.path), cwd=tmp_path).stdout
    assert "6 done" in status

    markdown = (folder.report_folder / "report.md").read_text()
    assert "Every trial" in markdown
    for depth in (1, 2, 3):
        for width in (0.25, 0.5):
            assert f"| convnet-depth{depth}-width{width}-s0 | {depth} | {width} | 0 |" in markdown


def test_the_index_refuses_a_changed_trial_and_forgets_a_deleted_one(tmp_path: Path) -> None:
    index = TrialIndex(tmp_path / "index.sqlite")
    index.register("a", role="trial", model="m", seed=0, point={"depth": 2})
    index.check_config("a", {}, {"lr": 0.1}, on_disk=False)
    index.mark_running("a")
    assert index.get("a").status == "running"  # type: ignore[union-attr]
    index.mark_done("a", {"test_acc": 0.9})
    with pytest.raises(ConfigError, match=r"differs in lr \(recorded 0.1, now 0.2\)"):
        index.check_config("a", {}, {"lr": 0.2}, on_disk=True)
    index.check_config("a", {}, {"lr": 0.2}, on_disk=False)  # its folder is gone: start over
    row = index.get("a")
    assert row is not None and row.status == "pending" and row.config["comparable"] == {"lr": 0.2}
    index.register("a", role="trial", model="m", seed=0, point={})  # a known trial keeps its row
    assert index.get("a").point == {"depth": 2}  # type: ignore[union-attr]


def test_a_running_trial_whose_process_died_reads_interrupted(tmp_path: Path) -> None:
    index = TrialIndex(tmp_path / "index.sqlite")
    index.register("a", role="trial", model="m", seed=0, point={})
    index.mark_running("a")
    assert index.get("a").shown_status == "running"  # type: ignore[union-attr]
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with index._connect() as db:  # as if a process that has since died had marked it
        db.execute("UPDATE trials SET pid = ? WHERE name = 'a'", (child.pid,))
    assert index.get("a").shown_status == "interrupted"  # type: ignore[union-attr]


def _outcome(directory: Path) -> dict[str, Any]:
    folder = ExperimentDirectory(directory)
    rows = TrialIndex(folder.index_file).rows()
    return {
        "index": sorted(
            (row.name, row.role, row.status, row.config_hash, str(strip_times([row.summary])))
            for row in rows
        ),
        "metrics": {
            row.name: strip_times(folder.trial(row.name).read_metrics())
            for row in rows
            if row.role == "trial"
        },
    }


FOUR_TRIALS = {"grid": {"model.options.depth": [1, 2], "model.options.width": [0.25, 0.5]}}


@pytest.fixture(scope="module")
def serial_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The 4-trial sweep one trial after another, at one thread: the reference."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("serial")
        result = run_experiment(
            experiment(sweep_digits(sweep=FOUR_TRIALS)), out, write_report=False
        )
        yield _outcome(result.directory)
    finally:
        torch.set_num_threads(before)


def test_processes_give_the_same_index_and_metrics_as_serial(
    tmp_path: Path, one_thread: None, serial_sweep: dict[str, Any]
) -> None:
    processes = run_experiment(
        experiment(sweep_digits(sweep=FOUR_TRIALS, jobs=2, executor="processes")),
        tmp_path / "processes",
        write_report=False,
    )
    assert _outcome(processes.directory) == serial_sweep


def test_ray_gives_the_same_index_and_metrics_as_serial(
    tmp_path: Path, one_thread: None, serial_sweep: dict[str, Any]
) -> None:
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'robustlab[ray]'")
    on_ray = run_experiment(
        experiment(sweep_digits(sweep=FOUR_TRIALS, jobs=2, executor="ray")),
        tmp_path / "ray",
        write_report=False,
    )
    outcome = _outcome(on_ray.directory)
    assert len(outcome["metrics"]) == 4
    assert outcome == serial_sweep
    threads = {trial["provenance"]["torch_threads"] for trial in on_ray.trials}
    assert threads == {1}
