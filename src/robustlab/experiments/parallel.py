"""Independent trials side by side: one worker process each, with an equal share of the threads.

Small CNNs at batch 128 keep two cores poorly busy: on the 2-core machine here, two one-thread
trainings side by side did 1.24–1.53× the work of one two-thread training (thesis-deep /
thesis-shallow), and 1.2× for PGD on 1000 images. Each worker's thread count depends on
``jobs`` alone, never on how many tasks are left, so a resumed run computes exactly what an
uninterrupted one would; a different thread count changes float reductions, so ``jobs`` is
part of what makes a run reproducible bit for bit (it is recorded in each run's provenance as
``torch_threads``).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from robustlab.train.trainer import TrainingReporter

T = TypeVar("T")


@dataclass(frozen=True)
class Job(Generic[T]):
    """One independent piece of an experiment; ``work`` must pickle (a module-level function
    or a ``functools.partial`` of one) so a spawned worker can run it."""

    label: str
    work: Callable[[TrainingReporter], T]
    cost: float
    """Relative size, only for ordering: the largest jobs start first so none is left alone
    at the end on a share of the threads."""


def threads_per_worker(jobs: int) -> int:
    return max(1, torch.get_num_threads() // jobs)


def run_jobs(jobs: Sequence[Job[T]], workers: int, reporter: TrainingReporter) -> list[T]:
    """Each job's result, in the order given; the first failure cancels the jobs not yet
    started and is raised once the running ones have finished (their work is on disk)."""
    if workers <= 1:
        return [job.work(reporter) for job in jobs]
    if not jobs:
        return []
    results: dict[int, T] = {}
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=context,
        initializer=torch.set_num_threads,
        initargs=(threads_per_worker(workers),),
    ) as pool:
        order = sorted(range(len(jobs)), key=lambda index: -jobs[index].cost)
        futures: dict[Future[T], int] = {
            pool.submit(jobs[index].work, reporter.in_worker(jobs[index].label)): index
            for index in order
        }
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [results[index] for index in range(len(jobs))]
