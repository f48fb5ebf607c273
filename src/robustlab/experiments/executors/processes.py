"""Independent jobs side by side: one spawned worker each, with an equal share of the threads.

Small CNNs at batch 128 keep two cores poorly busy: on the 2-core machine here, two one-thread
trainings side by side did 1.24–1.53× the work of one two-thread training (thesis-deep /
thesis-shallow), and 1.2× for PGD on 1000 images. Each worker's thread count depends on
``jobs`` alone (``threads_per_job``); a different thread count changes float reductions, so
``jobs`` is part of what makes a run reproducible bit for bit (each run records it in its
provenance as ``torch_threads``). At most ``jobs`` run at once, so "running" in the trial
index means running. A worker whose driving process is killed ends too, instead of training
on unseen while holding its trial folder's lock against the restarted run.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TypeVar

from robustlab.experiments.executors.base import (
    Events,
    Job,
    JobFailure,
    run_in_flight,
    run_with_threads,
    threads_per_job,
)
from robustlab.train.trainer import TrainingReporter

T = TypeVar("T")


class ProcessExecutor:
    name = "processes"

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def run(
        self, jobs: Sequence[Job[T]], reporter: TrainingReporter, events: Events
    ) -> list[T | JobFailure]:
        if not jobs:
            return []
        threads = threads_per_job(self.jobs)
        context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
        with ProcessPoolExecutor(
            max_workers=min(self.jobs, len(jobs)),
            mp_context=context,
            initializer=exit_with_parent,
            initargs=(os.getpid(),),
        ) as pool:

            def submit(job: Job[T]) -> Future[T]:
                return pool.submit(run_with_threads, threads, job, reporter.in_worker(job.label))

            def wait_any(futures: list[Future[T]]) -> Iterable[Future[T]]:
                return wait(futures, return_when=FIRST_COMPLETED).done

            return run_in_flight(jobs, self.jobs, events, submit, wait_any, Future.result)


def exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """In a worker: exit as soon as the driving process ``parent`` is gone (killed), as a kill
    of the whole run would have; its checkpoints are atomic, so the restart resumes cleanly."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
