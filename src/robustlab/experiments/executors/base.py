"""The executor contract: jobs in, each job's result or failure out, callbacks as they go."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import torch

from robustlab.train.trainer import TrainingReporter

T = TypeVar("T")


@dataclass(frozen=True)
class Job(Generic[T]):
    """One independent piece of an experiment; ``work`` must pickle (a module-level function
    or a ``functools.partial`` of one) so a worker process or a Ray task can run it."""

    label: str
    work: Callable[[TrainingReporter], T]
    cost: float = 0.0
    """Relative size, only for ordering: the largest jobs start first so none is left alone
    at the end on a share of the threads."""


@dataclass(frozen=True)
class JobFailure:
    """A job that raised: its label and the exception, raised again by the caller."""

    label: str
    error: BaseException


class Events(Protocol):
    def started(self, job: Job[T]) -> None: ...

    def finished(self, job: Job[T], result: T) -> None: ...

    def failed(self, job: Job[T], error: BaseException) -> None: ...


class Executor(Protocol):
    name: str

    def run(
        self, jobs: Sequence[Job[T]], reporter: TrainingReporter, events: Events
    ) -> list[T | JobFailure]:
        """Run every job (largest first when several run at once); a failed job does not
        stop the others. Results come back in the order given."""
        ...


def threads_per_job(jobs: int) -> int:
    """Each job's share of this machine's threads: a function of ``jobs`` alone, never of how
    many jobs are left, so a resumed run computes what an uninterrupted one did."""
    return max(1, torch.get_num_threads() // jobs)


def largest_first(jobs: Sequence[Job[T]]) -> list[int]:
    return sorted(range(len(jobs)), key=lambda index: -jobs[index].cost)


def run_in_flight(
    jobs: Sequence[Job[T]],
    limit: int,
    events: Events,
    submit: Callable[[Job[T]], Any],
    wait_any: Callable[[list[Any]], Iterable[Any]],
    collect: Callable[[Any], T],
) -> list[T | JobFailure]:
    """At most ``limit`` jobs in flight, largest first, so "running" in the index is true:
    ``submit`` starts a job and returns a handle, ``wait_any`` returns handles that finished,
    ``collect`` gives a finished handle's result or raises the job's own error."""
    waiting = largest_first(jobs)
    results: dict[int, T | JobFailure] = {}
    running: dict[Any, int] = {}
    while waiting or running:
        while waiting and len(running) < limit:
            index = waiting.pop(0)
            events.started(jobs[index])
            running[submit(jobs[index])] = index
        for handle in wait_any(list(running)):
            index = running.pop(handle)
            try:
                result = collect(handle)
            except Exception as error:  # the caller raises it once every job has run
                events.failed(jobs[index], error)
                results[index] = JobFailure(jobs[index].label, error)
            else:
                events.finished(jobs[index], result)
                results[index] = result
    return [results[index] for index in range(len(jobs))]


def run_with_threads(threads: int, job: Job[T], reporter: TrainingReporter) -> T:
    """A job's work with the thread count set first (in a worker or a Ray task)."""
    torch.set_num_threads(threads)
    return job.work(reporter)
