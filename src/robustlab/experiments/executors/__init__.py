"""Where an experiment's independent jobs (shared phases, trials) run.

Three executors with one contract (``Executor.run``): ``serial`` runs them in this process,
``processes`` in spawned workers on this machine, ``ray`` as tasks of a Ray cluster (a local
one unless an address is given). Every executor gives each job the same thread count for a
given ``jobs`` (``threads_per_job``), so the same plan computes the same numbers bit for bit
under each; only the driving process writes the trial index, through the callbacks.
"""

from __future__ import annotations

from robustlab.config import ExecutorConfig
from robustlab.errors import ConfigError
from robustlab.experiments.executors.base import Executor, Job, JobFailure, threads_per_job
from robustlab.experiments.executors.processes import ProcessExecutor
from robustlab.experiments.executors.serial import SerialExecutor

__all__ = [
    "Executor",
    "Job",
    "JobFailure",
    "ProcessExecutor",
    "SerialExecutor",
    "build_executor",
    "threads_per_job",
]


def build_executor(config: ExecutorConfig, jobs: int) -> Executor:
    """The configured executor; ``ray`` is checked for before any work starts."""
    kind = config.type
    if kind == "auto":
        kind = "serial" if jobs <= 1 else "processes"
    if kind == "serial":
        if jobs > 1:
            raise ConfigError(f"executor: serial runs one job at a time, but jobs is {jobs}")
        return SerialExecutor()
    if kind == "processes":
        return ProcessExecutor(jobs)
    from robustlab.experiments.executors.ray import RayExecutor, require_ray

    require_ray()
    return RayExecutor(jobs, address=config.address)
