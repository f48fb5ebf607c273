"""Jobs one after another in this process, with all of its threads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from robustlab.experiments.executors.base import Events, Job, JobFailure, run_in_flight
from robustlab.train.trainer import TrainingReporter

T = TypeVar("T")


class _Done:
    """A job already run: its result, or the error it raised."""

    def __init__(self, job: Job[Any], reporter: TrainingReporter) -> None:
        self.error: Exception | None = None
        try:
            self.result = job.work(reporter)
        except Exception as error:  # recorded and raised by the caller after the rest
            self.error = error

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class SerialExecutor:
    name = "serial"

    def run(
        self, jobs: Sequence[Job[T]], reporter: TrainingReporter, events: Events
    ) -> list[T | JobFailure]:
        def finished(handles: list[_Done]) -> Iterable[_Done]:
            return handles

        return run_in_flight(
            jobs,
            1,
            events,
            lambda job: _Done(job, reporter),
            finished,
            lambda done: done.outcome(),
        )
