"""Jobs one after another in this process, with all of its threads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from robustlab.experiments.executors.base import Events, Job, JobFailure
from robustlab.train.trainer import TrainingReporter

T = TypeVar("T")


class SerialExecutor:
    name = "serial"

    def run(
        self, jobs: Sequence[Job[T]], reporter: TrainingReporter, events: Events
    ) -> list[T | JobFailure]:
        results: list[T | JobFailure] = []
        for job in jobs:
            events.started(job)
            try:
                result = job.work(reporter)
            except Exception as error:  # recorded and raised by the caller after the rest
                events.failed(job, error)
                results.append(JobFailure(job.label, error))
                continue
            events.finished(job, result)
            results.append(result)
        return results
