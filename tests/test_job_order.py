"""Executors start a job only after the jobs it names in ``after``, longest chains first."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from robustlab.errors import ConfigError
from robustlab.experiments.executors import Job, JobFailure, ProcessExecutor, SerialExecutor
from robustlab.experiments.executors.base import PrerequisiteFailed, priorities
from robustlab.train.trainer import TrainingReporter
from tests.test_parallel import Recorder


def _label(label: str, _reporter: TrainingReporter) -> str:
    return label


def _fail(_reporter: TrainingReporter) -> str:
    raise ConfigError("broken on purpose")


def _write(path: Path, _reporter: TrainingReporter) -> str:
    path.write_text("written by the prerequisite")
    return "wrote"


def _read(path: Path, _reporter: TrainingReporter) -> str:
    return path.read_text()  # FileNotFoundError if run before its prerequisite


def job(label: str, cost: float, *after: str) -> Job[str]:
    return Job(label, partial(_label, label), cost, after=after)


def started(recorder: Recorder) -> list[str]:
    return [label for kind, label in recorder.events if kind == "started"]


def test_the_longest_chain_starts_first_not_the_largest_job() -> None:
    jobs = [job("big", 5), job("shared", 1), job("trial", 10, "shared"), job("eval", 3, "trial")]
    assert priorities(jobs) == [5, 14, 13, 3]
    recorder = Recorder()
    results = SerialExecutor().run(jobs, TrainingReporter(), recorder)
    assert results == ["big", "shared", "trial", "eval"]  # in the order given
    assert started(recorder) == ["shared", "trial", "big", "eval"]


def test_without_edges_the_largest_job_starts_first() -> None:
    recorder = Recorder()
    SerialExecutor().run([job("a", 1), job("b", 3), job("c", 2)], TrainingReporter(), recorder)
    assert started(recorder) == ["b", "c", "a"]


def test_a_failed_job_stops_only_what_needs_it() -> None:
    jobs: list[Job[str]] = [
        Job("shared", _fail, cost=1),
        job("trial", 1, "shared"),
        job("eval", 1, "trial"),
        job("other", 1),
    ]
    recorder = Recorder()
    results = SerialExecutor().run(jobs, TrainingReporter(), recorder)
    assert isinstance(results[0], JobFailure) and isinstance(results[0].error, ConfigError)
    for failed, prerequisite in ((results[1], "shared"), (results[2], "trial")):
        assert isinstance(failed, JobFailure) and isinstance(failed.error, PrerequisiteFailed)
        assert failed.error.prerequisite == prerequisite
        assert f"{prerequisite!r}, failed" in str(failed.error)
    assert results[3] == "other"
    assert started(recorder) == ["shared", "other"]  # nothing that needs it was started
    assert ("failed", f"eval: {results[2].error}") in recorder.events


def test_in_worker_processes_a_job_sees_what_its_prerequisite_wrote(tmp_path: Path) -> None:
    # the reader costs more, so without the edge it would start first and find no file
    path = tmp_path / "shared.txt"
    jobs: list[Job[str]] = [
        Job("reader", partial(_read, path), cost=10, after=("writer",)),
        Job("writer", partial(_write, path), cost=1),
        job("independent", 5),
    ]
    recorder = Recorder()
    results = ProcessExecutor(2).run(jobs, TrainingReporter(), recorder)
    assert results == ["written by the prerequisite", "wrote", "independent"]
    order = recorder.events
    assert order.index(("finished", "writer")) < order.index(("started", "reader"))


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([job("a", 1, "missing")], "needs 'missing', which is not in this run"),
        ([job("a", 1, "b"), job("b", 1, "a")], "depends on itself"),
        ([job("a", 1), job("a", 2)], "unique"),
    ],
)
def test_edges_that_cannot_be_run_are_refused_before_any_job(
    jobs: list[Job[str]], message: str
) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match=message):
        SerialExecutor().run(jobs, TrainingReporter(), recorder)
    assert recorder.events == []
