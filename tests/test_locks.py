"""One writer per folder: a second `robustlab train` of one run folder, or `robustlab run` of one
experiment, is refused naming the process that holds it; a killed holder blocks nobody; the
workers of one experiment still write their trials; and a config is validated completely
(two phases of one name included) before any folder is claimed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from robustlab.config import ExperimentConfig, TrialConfig, load_experiment, parse_config
from robustlab.errors import CheckpointError, ConfigError
from robustlab.experiments import run_experiment
from robustlab.store.lock import folder_lock, lock_file, read_holder
from robustlab.store.runs import RunDirectory

HOST = socket.gethostname()
EXPERIMENT = """
name: locked
data: {dataset: synthetic}
models: [{name: thesis-shallow}]
device: cpu
phases:
  - {name: clean, epochs: 400, batch_size: 64}
evaluation: {train_subset: 0, attack_images: 50}
report: {}
"""
HOLD = """
import sys, time
from pathlib import Path
from robustlab.store.lock import folder_lock
with folder_lock(Path(sys.argv[1]), "run folder"):
    print("locked", flush=True)
    time.sleep(600)
"""


def robustlab(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.Popen(
        [sys.executable, "-m", "robustlab", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Exit status and stderr, with the console's line wrapping undone."""
    _, stderr = process.communicate(timeout=300)
    return process.returncode, " ".join(stderr.split())


def wait_for_holder(folder: Path, process: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        holder = read_holder(folder)
        if holder is not None and holder.get("pid") == process.pid:
            return holder
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{folder} was never locked by process {process.pid}")


@contextmanager
def killed_at_end(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.communicate()


@contextmanager
def held_elsewhere(folder: Path) -> Iterator[int]:
    """``folder``'s lock held by another process for the block; yields its pid."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    with killed_at_end(process):
        assert process.stdout is not None and process.stdout.readline().strip() == "locked"
        yield process.pid


def epochs_of(run: RunDirectory) -> list[int]:
    return [r["global_epoch"] for r in run.read_metrics() if r.get("event") == "epoch"]


def test_a_second_train_of_one_run_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "runs" / "shared-dir")
    common = ["train", "--dataset", "synthetic", "--device", "cpu", "--run-dir", str(run.path)]
    first = robustlab(*common, "--epochs", "400", cwd=tmp_path)
    with killed_at_end(first):
        holder = wait_for_holder(run.path, first)
        assert holder["host"] == HOST and "train" in holder["command"]
        for extra in ([], ["--resume"]):  # a different seed and lr, fresh or as a resume
            second = robustlab(
                *common, "--epochs", "2", "--seed", "1", "--lr", "0.01", *extra, cwd=tmp_path
            )
            status, stderr = finish(second)
            assert status == 2, stderr
            assert f"run folder {run.path} is being written by process {first.pid} on {HOST}" in (
                stderr
            )
            assert f"since {holder['since']}" in stderr and "Traceback" not in stderr
        while len(epochs_of(run)) < 2:  # the first goes on undisturbed
            assert first.poll() is None
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert run.read_config().seed == 0  # everything in the folder is the first run's
    epochs = epochs_of(run)
    assert epochs == list(range(1, len(epochs) + 1))
    # The kernel released the killed process's lock: nothing stale blocks the next writer.
    with folder_lock(run.path, "run folder"):
        assert read_holder(run.path)["pid"] == os.getpid()  # type: ignore[index]
    assert lock_file(run.path).read_text() == ""  # forgotten on release


def test_a_second_run_of_one_experiment_is_refused_naming_the_first(tmp_path: Path) -> None:
    config = tmp_path / "locked.yaml"
    config.write_text(EXPERIMENT)
    folder = tmp_path / "runs" / "locked"
    first = robustlab("run", str(config), "--out", "runs", cwd=tmp_path)
    with killed_at_end(first):
        wait_for_holder(folder, first)
        trial = RunDirectory(folder / "thesis-shallow-s0")
        while not epochs_of(trial):
            assert first.poll() is None
            time.sleep(0.05)
        status, stderr = finish(robustlab("run", str(config), "--out", "runs", cwd=tmp_path))
        assert status == 2, stderr
        assert f"experiment folder runs/locked is being written by process {first.pid}" in stderr
        assert "Traceback" not in stderr and "OSError" not in stderr
        # The trial's folder is locked by whoever trains it (here the driving process itself).
        assert read_holder(trial.path)["pid"] == first.pid  # type: ignore[index]
        first.send_signal(signal.SIGKILL)
        first.wait()
    epochs = epochs_of(trial)
    assert epochs == list(range(1, len(epochs) + 1))  # no epoch written twice
    with folder_lock(folder, "experiment folder"):
        pass


def test_workers_of_a_killed_run_end_with_it_and_free_their_trial_folders(
    tmp_path: Path,
) -> None:
    config = tmp_path / "locked.yaml"
    config.write_text(EXPERIMENT)
    trial = tmp_path / "runs" / "locked" / "thesis-shallow-s0"
    parent = robustlab("run", str(config), "--out", "runs", "--jobs", "2", cwd=tmp_path)
    with killed_at_end(parent):
        wait_for_holder(tmp_path / "runs" / "locked", parent)
        deadline = time.monotonic() + 120
        while (holder := read_holder(trial)) is None or holder["pid"] == parent.pid:
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        worker = holder["pid"]  # a worker process writes the trial, under its own lock
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 30
    while True:  # the orphaned worker notices and exits, and its lock goes with it
        try:
            with folder_lock(trial, "run folder"):
                break
        except CheckpointError as error:
            assert f"process {worker}" in str(error) and time.monotonic() < deadline
            time.sleep(0.2)
    assert not alive(worker)


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie its new parent has not reaped yet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_trial_folder_written_elsewhere_fails_that_trial_naming_the_holder(
    tmp_path: Path,
) -> None:
    raw: dict[str, Any] = yaml.safe_load(EXPERIMENT)
    raw["phases"][0]["epochs"] = 1
    config = parse_config(ExperimentConfig, raw, source="test")
    trial = tmp_path / "locked" / "thesis-shallow-s0"
    with held_elsewhere(trial) as pid, pytest.raises(CheckpointError) as raised:
        run_experiment(config, tmp_path, write_report=False)
    assert f"run folder {trial} is being written by process {pid} on {HOST}" in str(raised.value)
    assert not RunDirectory(trial).has_started


def test_locks_are_reentrant_in_a_process_and_exclusive_between_processes(
    tmp_path: Path,
) -> None:
    experiment = tmp_path / "experiment"
    with folder_lock(experiment, "experiment folder"):
        with folder_lock(experiment, "experiment folder"):  # the runner, then the trainer
            pass
        assert read_holder(experiment)["pid"] == os.getpid()  # type: ignore[index]
        # A worker process can lock a trial's folder while this one holds the experiment's.
        with (
            held_elsewhere(experiment / "trial") as pid,
            pytest.raises(CheckpointError) as raised,
            folder_lock(experiment / "trial", "run folder"),
        ):
            pass
        assert f"by process {pid} on {HOST}" in str(raised.value)
    assert lock_file(experiment) == experiment / ".lock"  # inside: listings stay as they were


def test_a_folder_locked_but_never_written_makes_way_for_an_assembled_run(
    tmp_path: Path,
) -> None:
    run = RunDirectory(tmp_path / "trial")
    with (
        held_elsewhere(run.path),
        pytest.raises(CheckpointError, match="is being written by process"),
    ):
        run.remove_if_unstarted()
    (run.checkpoint_dir / ".last.pt.abcdefgh.tmp").parent.mkdir()
    (run.checkpoint_dir / ".last.pt.abcdefgh.tmp").write_bytes(b"half")
    run.remove_if_unstarted()  # its writer is gone and wrote nothing but a temporary file
    assert not run.path.exists()
    with folder_lock(run.path, "run folder"):
        (run.path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="holds files but no run"):
        run.remove_if_unstarted()
    assert (run.path / "notes.txt").exists()


def test_two_phases_of_one_name_are_refused_before_any_folder_is_claimed(tmp_path: Path) -> None:
    raw: dict[str, Any] = yaml.safe_load(EXPERIMENT)
    raw["phases"] = [
        {"name": "clean", "epochs": 1},
        {"name": "robust", "epochs": 1, "objective": {"type": "adversarial"}},
        {"name": "clean", "epochs": 1},
    ]
    config = tmp_path / "twice.yaml"
    config.write_text(yaml.safe_dump(raw))
    status, stderr = finish(robustlab("run", str(config), "--out", "runs", cwd=tmp_path))
    assert status == 2, stderr
    expected = "phases: Value error, phase names must be unique; repeated: clean (phases.2.name"
    assert expected in stderr
    assert not (tmp_path / "runs").exists()  # nothing claimed, so a corrected config just runs
    with pytest.raises(ConfigError, match=r"phases\.2\.name repeats 'clean'"):
        load_experiment(config)
    trial = {"trial": "t", "data": {"dataset": "synthetic"}, "model": {"name": "thesis-shallow"}}
    with pytest.raises(ConfigError, match=r"phases\.2\.name repeats 'clean' of phases\.0\.name"):
        parse_config(TrialConfig, {**trial, "phases": raw["phases"]}, source="test")
    raw["phases"][2]["name"] = "clean-again"
    config.write_text(yaml.safe_dump(raw))
    assert [phase.name for phase in load_experiment(config).phases][-1] == "clean-again"
