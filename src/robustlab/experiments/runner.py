"""Run an experiment's plan; a re-run skips finished trials and resumes the rest.

Work: (1) the shared phases of every trial, trained once per distinct prefix; (2) the
calibration, when trials train at the calibrated ε; (3) every trial not yet finished, started
from its shared prefix; (4) the kind's own evaluation of each trained trial, if it has one
(the defenses kind's attacks); (5) ``summary.json`` and the report. (1), (3) and (4) are jobs
of one executor run, each started as soon as the jobs it needs are done (a trial its shared
prefix, an evaluation the trials it reads), so no core waits for a whole stage to end; only a
calibration, which needs every shared prefix, splits them into two runs. Everything is on
disk before what needs it starts, and the trial index records every trial's status as it
goes, so an interrupted run picks up where it stopped.

Everything that can be checked is checked before the experiment folder is touched; then this
process locks it for the whole run (a second ``robustlab run`` of it is refused, naming this
one), and whoever trains a trial or a shared prefix locks that run's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from robustlab.config import ExperimentConfig, TrialConfig, TrialSpec
from robustlab.experiments.calibrating import calibrate_experiment
from robustlab.experiments.executors import Executor, Job, JobFailure, build_executor
from robustlab.experiments.plan import Plan, build_plan
from robustlab.experiments.shared import resolved, shared_prefix, shared_run, start_from_shared
from robustlab.provenance import provenance
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.index import TrialIndex
from robustlab.store.runs import RunDirectory, comparable_config
from robustlab.train.trainer import TrainingReporter, train_trial

T = TypeVar("T")


@dataclass(frozen=True)
class ExperimentResult:
    directory: Path
    trials: list[dict[str, Any]]
    """Each trial's results.json content, in plan order."""
    report: Path | None = None


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    reporter: TrainingReporter | None = None,
    write_report: bool = True,
) -> ExperimentResult:
    out = Path(out_dir)
    plan = build_plan(config)
    executor = build_executor(config.executor, config.jobs)  # a missing Ray fails here
    known = {spec.name: spec.resolve() for spec in plan.trials if not spec.needs_calibration}
    folder = ExperimentDirectory(out / config.name)
    with folder.lock():  # nothing is written before this point
        folder.remove_leftovers()
        return _run_locked(
            plan, known, out, folder, executor, reporter or TrainingReporter(), write_report
        )


def _run_locked(
    plan: Plan,
    known: dict[str, TrialConfig],
    out: Path,
    folder: ExperimentDirectory,
    executor: Executor,
    reporter: TrainingReporter,
    write_report: bool,
) -> ExperimentResult:
    config = plan.config
    index = TrialIndex(folder.index_file)
    for spec in plan.trials:
        index.register(
            spec.name, role="trial", model=spec.model, seed=spec.seed, point=dict(spec.point.values)
        )
    _check_unchanged(index, folder, known)  # before any work: a changed trial is refused now
    folder.write_config(config)

    shared = _shared_jobs(plan, out, index)
    if config.calibration is None:
        trials = [spec.resolve(None) for spec in plan.trials]
        _check_unchanged(index, folder, {trial.trial: trial for trial in trials})
    else:  # every shared prefix must be trained before ε is known
        _raise_failures(executor.run(shared, reporter, _IndexEvents(index, {}, quiet=set())))
        shared = []
        reporter.status("calibrating ε on the standard-trained models")
        before = [spec.before_calibration() for spec in plan.trials]
        calibration = calibrate_experiment(config.calibration, before, out, folder)
        eps = calibration["eps"]
        reporter.status(
            f"calibrated ε* = {eps:.4f} ({calibration['attack']}, "
            f"{calibration['target_success']:.0%} success)"
        )
        trials = [spec.resolve(eps) for spec in plan.trials]
        _check_unchanged(index, folder, {trial.trial: trial for trial in trials})
    training = _trial_jobs(plan, trials, out, folder, index, {job.label for job in shared})
    evaluations = _evaluation_jobs(plan, trials, out, {job.label for job in training})
    events = _IndexEvents(
        index,
        {trial.trial: trial for trial in trials},
        quiet={job.label for job in evaluations},  # not trials: their file is their record
    )
    _raise_failures(executor.run([*shared, *training, *evaluations], reporter, events))
    results = [folder.trial(trial.trial).read_results() for trial in trials]
    folder.write_summary(
        {"trials": results, "calibration": folder.read_calibration(), "provenance": provenance()}
    )
    report = None
    if write_report:
        from robustlab.experiments.reporting import write_experiment_report

        report = write_experiment_report(folder.path)
    return ExperimentResult(directory=folder.path, trials=results, report=report)


def _check_unchanged(
    index: TrialIndex, folder: ExperimentDirectory, trials: dict[str, TrialConfig]
) -> None:
    for name, trial in trials.items():
        index.check_config(
            name,
            trial.model_dump(mode="json"),
            comparable_config(resolved(trial)),
            on_disk=folder.trial(name).has_started,
        )


def _shared_jobs(plan: Plan, out: Path, index: TrialIndex) -> list[Job[Any]]:
    """A job per distinct shared prefix not yet trained."""
    prefixes: dict[str, tuple[TrialConfig, TrialSpec]] = {}
    for spec in plan.trials:
        prefix = shared_prefix(spec.before_calibration())
        if prefix is not None and prefix.trial not in prefixes:
            prefixes[prefix.trial] = (prefix, spec)
    jobs: list[Job[Any]] = []
    for name, (prefix, spec) in prefixes.items():
        index.register(name, role="shared", model=spec.model, seed=spec.seed, point={})
        if shared_run(out, prefix).is_finished:
            index.mark_done(name, {})
            continue
        jobs.append(Job(name, partial(_train_shared, prefix, out), plan.cost(spec)))
    return jobs


def _trial_jobs(
    plan: Plan,
    trials: list[TrialConfig],
    out: Path,
    folder: ExperimentDirectory,
    index: TrialIndex,
    pending_shared: set[str],
) -> list[Job[Any]]:
    """A job per trial not yet finished, after its shared prefix if that is still to train."""
    jobs: list[Job[Any]] = []
    for spec, trial in zip(plan.trials, trials, strict=True):
        run = folder.trial(trial.trial)
        if run.is_finished:  # never redone; the index catches up if a kill left it behind
            index.mark_done(trial.trial, trial_summary(run.read_results(), trial))
            continue
        prefix = shared_prefix(trial)
        after = (prefix.trial,) if prefix is not None and prefix.trial in pending_shared else ()
        work = partial(_train_trial, trial, out, folder.path)
        jobs.append(Job(trial.trial, work, plan.cost(spec), after=after))
    return jobs


def _evaluation_jobs(
    plan: Plan, trials: list[TrialConfig], out: Path, pending_trials: set[str]
) -> list[Job[Any]]:
    """The kind's evaluation of each trial not yet evaluated, after the trials it reads."""
    jobs: list[Job[Any]] = []
    for spec, trial in zip(plan.trials, trials, strict=True):
        work = plan.kind.trial_evaluation(plan.config, plan.options, spec, trial, out)
        if work is None:
            continue
        needs = plan.kind.evaluation_needs(plan.config, plan.options, spec, trial)
        after = pending_trials if needs is None else pending_trials.intersection(needs)
        label = f"{trial.trial} (evaluation)"
        jobs.append(Job(label, work, plan.cost(spec), after=tuple(sorted(after))))
    return jobs


def _train_shared(prefix: TrialConfig, out: Path, reporter: TrainingReporter) -> None:
    train_trial(prefix, shared_run(out, prefix).path, resume=True, reporter=reporter)


def _train_trial(
    trial: TrialConfig, out: Path, directory: Path, reporter: TrainingReporter
) -> dict[str, Any]:
    """The trial, started from its shared phases' run; its results.json content.

    The trial's folder is assembled beside it and moved in under the experiment's lock (held
    by the driving process), then locked here until its results are written.
    """
    run = RunDirectory(directory / trial.trial)
    prefix = shared_prefix(trial)
    shared = None if prefix is None or run.has_started else shared_run(out, prefix)
    if shared is not None:
        run.remove_if_unstarted()  # a lock left by a writer that stopped before writing
        shared.verify()  # a damaged shared phase is never copied into a trial
        start_from_shared(shared, trial, run, reporter)
    with run.lock():
        if shared is not None:
            run.adopt_records(shared)
        train_trial(trial, run.path, resume=True, reporter=reporter)
    return run.read_results()


def trial_summary(results: dict[str, Any], trial: TrialConfig) -> dict[str, Any]:
    """The few numbers the index keeps per trial: final accuracy, size, time, and each
    phase's clean and worst-case robust accuracy, in phase order."""
    final = results.get("final", {})
    ends = results.get("phase_end", {})
    return {
        "test_acc": final.get("test_acc"),
        "train_eval_acc": final.get("train_eval_acc"),
        "parameters": results.get("parameters"),
        "train_seconds": results.get("train_seconds"),
        "phase_end": [
            {
                "phase": phase.name,
                "clean_acc": ends[phase.name].get("clean_acc"),
                "worst_case_acc": ends[phase.name].get("worst_case_acc"),
            }
            for phase in trial.phases
            if phase.name in ends
        ],
    }


class _IndexEvents:
    """Executor events written to the trial index by the driving process; jobs in ``quiet``
    have no row there."""

    def __init__(self, index: TrialIndex, trials: dict[str, TrialConfig], quiet: set[str]) -> None:
        self.index = index
        self.trials = trials
        self.quiet = quiet

    def started(self, job: Job[Any]) -> None:
        if job.label not in self.quiet:
            self.index.mark_running(job.label)

    def finished(self, job: Job[Any], result: Any) -> None:
        if job.label in self.quiet:
            return
        trial = self.trials.get(job.label)
        summary = {} if trial is None else trial_summary(result, trial)
        self.index.mark_done(job.label, summary)

    def failed(self, job: Job[Any], error: BaseException) -> None:
        if job.label not in self.quiet:
            self.index.mark_failed(job.label, f"{type(error).__name__}: {error}")


def _raise_failures(results: list[T | JobFailure]) -> None:
    """After every job has run: the first failure's own error (the others are in the index)."""
    failures = [result for result in results if isinstance(result, JobFailure)]
    if failures:
        raise failures[0].error
