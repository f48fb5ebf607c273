"""Jobs as Ray tasks: the same run directories and index, on one machine or a cluster.

``ray.init()`` starts a local Ray instance unless ``address`` names a cluster (``auto`` finds
the one this machine belongs to, ``ray://host:10001`` a remote one). Each task asks Ray for
``threads_per_job(jobs)`` CPUs and sets torch to that many threads, which is what makes the
numbers identical to the other executors'. Workers write run directories themselves, so on a
cluster the output folder must be on storage every node sees (as Ray Tune's
``RunConfig(storage_path=...)`` must); the trial index stays with the driver. At most ``jobs``
tasks are in flight, so "running" in the index means running.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from robustlab.errors import ConfigError
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

INSTALL_HINT = "pip install 'robustlab[ray]'"


def require_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"executor: ray is not installed in this environment; install it with "
            f"{INSTALL_HINT} (or choose executor: processes)"
        ) from None
    return ray


class RayExecutor:
    name = "ray"

    def __init__(self, jobs: int, *, address: str | None = None) -> None:
        self.jobs = jobs
        self.address = address

    def run(
        self, jobs: Sequence[Job[T]], reporter: TrainingReporter, events: Events
    ) -> list[T | JobFailure]:
        if not jobs:
            return []
        ray = require_ray()
        started_here = not ray.is_initialized()
        threads = threads_per_job(self.jobs)
        if started_here:
            if self.address is None:
                # A local instance with room for every job at once; no dashboard to serve.
                cpus = max(os.cpu_count() or 1, threads * self.jobs)
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True)
            else:
                ray.init(address=self.address, log_to_driver=True)
        task = ray.remote(num_cpus=threads, max_retries=0)(run_with_threads)

        def submit(job: Job[T]) -> Any:
            return task.remote(threads, job, reporter.in_worker(job.label))

        def wait_any(refs: list[Any]) -> Iterable[Any]:
            done, _ = ray.wait(refs, num_returns=1)
            return list(done)

        def collect(ref: Any) -> T:
            try:
                result: T = ray.get(ref)
            except Exception as error:
                raise _original(error) from None
            return result

        try:
            return run_in_flight(jobs, self.jobs, events, submit, wait_any, collect)
        finally:
            if started_here:
                ray.shutdown()


def _original(error: Exception) -> BaseException:
    """The job's own exception inside Ray's wrapper, so its message reaches the user."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error
