"""The executor contract: jobs in, each job's result or failure out, callbacks as they go.

Jobs may name others of the same run that must finish first (``Job.after``): a trial needs
its shared phases, an evaluation the models it attacks. One run with these edges replaces a
run per stage, whose barriers left cores idle while the longest job of a stage ran alone.
"""

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
    after: tuple[str, ...] = ()
    """Labels of jobs of the same run that must have finished (not failed) before this one
    starts; a job whose prerequisite failed is not run and fails with ``PrerequisiteFailed``."""


class PrerequisiteFailed(RuntimeError):
    """A job that was not run because a job it needs failed."""

    def __init__(self, label: str, prerequisite: str) -> None:
        super().__init__(f"{label!r} was not run: the job it needs, {prerequisite!r}, failed")
        self.prerequisite = prerequisite


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
        """Run every job, each after the jobs it names in ``after`` (the longest chains
        first when several can run); a failed job stops only the jobs that need it. Results
        come back in the order given."""
        ...


def threads_per_job(jobs: int) -> int:
    """Each job's share of this machine's threads: a function of ``jobs`` alone, never of how
    many jobs are left, so a resumed run computes what an uninterrupted one did."""
    return max(1, torch.get_num_threads() // jobs)


def priorities(jobs: Sequence[Job[T]]) -> list[float]:
    """Each job's cost plus the costliest chain of jobs waiting on it: starting the job with
    the highest first starts the longest chain early (largest first when no job waits)."""
    index_of = {job.label: index for index, job in enumerate(jobs)}
    if len(index_of) != len(jobs):
        raise ValueError("job labels must be unique within a run")
    dependents: list[list[int]] = [[] for _ in jobs]
    for index, job in enumerate(jobs):
        for label in job.after:
            if label not in index_of:
                raise ValueError(f"job {job.label!r} needs {label!r}, which is not in this run")
            dependents[index_of[label]].append(index)
    rank: dict[int, float] = {}
    visiting: set[int] = set()

    def chain(index: int) -> float:
        if index in rank:
            return rank[index]
        if index in visiting:
            raise ValueError(f"job {jobs[index].label!r} depends on itself through 'after'")
        visiting.add(index)
        longest = max((chain(dependent) for dependent in dependents[index]), default=0.0)
        visiting.discard(index)
        rank[index] = jobs[index].cost + longest
        return rank[index]

    return [chain(index) for index in range(len(jobs))]


def run_in_flight(
    jobs: Sequence[Job[T]],
    limit: int,
    events: Events,
    submit: Callable[[Job[T]], Any],
    wait_any: Callable[[list[Any]], Iterable[Any]],
    collect: Callable[[Any], T],
) -> list[T | JobFailure]:
    """At most ``limit`` jobs in flight, so "running" in the index is true; of the jobs whose
    prerequisites have finished, the highest ``priorities`` start first. ``submit`` starts a
    job and returns a handle, ``wait_any`` returns handles that finished, ``collect`` gives a
    finished handle's result or raises the job's own error."""
    priority = priorities(jobs)
    index_of = {job.label: index for index, job in enumerate(jobs)}
    waiting = sorted(range(len(jobs)), key=lambda index: -priority[index])
    results: dict[int, T | JobFailure] = {}
    running: dict[Any, int] = {}

    def fail(index: int, error: BaseException) -> None:
        results[index] = JobFailure(jobs[index].label, error)
        events.failed(jobs[index], error)
        for other in list(waiting):  # what needs this job can never run
            if jobs[index].label in jobs[other].after:
                waiting.remove(other)
                fail(other, PrerequisiteFailed(jobs[other].label, jobs[index].label))

    def ready(index: int) -> bool:
        return all(
            index_of[label] in results and not isinstance(results[index_of[label]], JobFailure)
            for label in jobs[index].after
        )

    while waiting or running:
        for index in [index for index in waiting if ready(index)]:
            if len(running) >= limit:
                break
            waiting.remove(index)
            events.started(jobs[index])
            running[submit(jobs[index])] = index
        if not running:  # cannot happen with checked edges; never spin
            stuck = [jobs[index].label for index in waiting]
            raise RuntimeError(f"jobs left that can never start: {stuck}")
        for handle in wait_any(list(running)):
            index = running.pop(handle)
            try:
                result = collect(handle)
            except Exception as error:  # the caller raises it once every job has run
                fail(index, error)
            else:
                results[index] = result
                events.finished(jobs[index], result)
    return [results[index] for index in range(len(jobs))]


def run_with_threads(threads: int, job: Job[T], reporter: TrainingReporter) -> T:
    """A job's work with the thread count set first (in a worker or a Ray task)."""
    torch.set_num_threads(threads)
    return job.work(reporter)
