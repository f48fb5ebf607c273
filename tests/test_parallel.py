"""Trials side by side in worker processes compute what the same trials one after another do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.errors import ConfigError
from robustlab.experiments import run_experiment
from robustlab.experiments.executors import Job, JobFailure, ProcessExecutor, threads_per_job
from robustlab.store.runs import RunDirectory
from robustlab.train.trainer import TrainingReporter
from tests.test_experiments import experiment, small_experiment, strip_times


class LabelRecorder(TrainingReporter):
    """Notes which jobs went to worker processes."""

    def __init__(self) -> None:
        self.labels: list[str] = []

    def in_worker(self, label: str) -> TrainingReporter:
        self.labels.append(label)
        return TrainingReporter()


def _threads(_reporter: TrainingReporter) -> int:
    return torch.get_num_threads()


def _fail(_reporter: TrainingReporter) -> int:
    raise ConfigError("phases.0.epochs: broken on purpose")


def test_two_jobs_give_the_same_trials_as_one_after_another(
    tmp_path: Path, one_thread: None
) -> None:
    raw = {**small_experiment(), "seeds": [0]}
    sequential = run_experiment(experiment(raw), tmp_path / "sequential", write_report=False)
    reporter = LabelRecorder()
    parallel = run_experiment(
        experiment({**raw, "jobs": 2}),
        tmp_path / "parallel",
        reporter=reporter,
        write_report=False,
    )
    assert sorted(reporter.labels) == sorted(
        [path.name for path in (tmp_path / "parallel" / "shared").iterdir()]
        + [trial["trial"] for trial in parallel.trials]
    )
    assert [t["trial"] for t in parallel.trials] == [t["trial"] for t in sequential.trials]
    for trial in sequential.trials:
        ours = RunDirectory(parallel.directory / trial["trial"])
        theirs = RunDirectory(sequential.directory / trial["trial"])
        assert strip_times(ours.read_metrics()) == strip_times(theirs.read_metrics())
        assert ours.read_results()["final"] == theirs.read_results()["final"]
        assert ours.read_results()["provenance"]["torch_threads"] == 1
    summary = json.loads((parallel.directory / "summary.json").read_text())
    reference = json.loads((sequential.directory / "summary.json").read_text())
    assert summary["calibration"]["eps"] == reference["calibration"]["eps"]


class Recorder:
    """Executor events, in the order they came."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def started(self, job: Job[Any]) -> None:
        self.events.append(("started", job.label))

    def finished(self, job: Job[Any], result: Any) -> None:
        self.events.append(("finished", job.label))

    def failed(self, job: Job[Any], error: BaseException) -> None:
        self.events.append(("failed", f"{job.label}: {error}"))


@pytest.mark.parametrize("threads", [2, 4])
def test_each_worker_gets_an_equal_share_of_the_threads(threads: int) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        jobs = [Job(f"job{index}", _threads, cost=index) for index in range(3)]
        shares = ProcessExecutor(2).run(jobs, TrainingReporter(), Recorder())
    finally:
        torch.set_num_threads(before)
    assert shares == [threads // 2] * 3
    assert threads_per_job(3) == 1 and threads_per_job(1) == torch.get_num_threads()


def test_a_failing_job_comes_back_with_its_own_error_and_the_others_finish() -> None:
    jobs = [Job("fine", _threads, cost=1), Job("broken", _fail, cost=2), Job("late", _threads)]
    recorder = Recorder()
    results = ProcessExecutor(2).run(jobs, TrainingReporter(), recorder)
    failure = results[1]
    assert isinstance(failure, JobFailure) and isinstance(failure.error, ConfigError)
    assert "broken on purpose" in str(failure.error)
    assert isinstance(results[0], int) and isinstance(results[2], int)
    assert recorder.events[:2] == [("started", "broken"), ("started", "fine")]  # largest first
    assert ("failed", "broken: phases.0.epochs: broken on purpose") in recorder.events
    assert sum(kind == "finished" for kind, _ in recorder.events) == 2
