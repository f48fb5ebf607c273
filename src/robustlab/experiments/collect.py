"""Read an experiment folder back into numbers: one ``TrialSummary`` per finished trial.

Everything comes from what the runs wrote (``config.yaml``, ``metrics.jsonl``,
``results.json``), so a report can be rebuilt at any time without the models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustlab.config import ExperimentConfig
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.runs import RunDirectory

if TYPE_CHECKING:
    from robustlab.experiments.plan import Plan


@dataclass(frozen=True)
class PhaseNumbers:
    """A phase's last epoch and its end-of-phase evaluation."""

    phase: str
    train_acc: float | None
    """Clean accuracy on the training subset, in eval mode."""
    running_train_acc: float
    """Accuracy during the last epoch's training steps: on the training attack's examples
    for adversarial phases, with dropout active."""
    test_acc: float
    evaluation: dict[str, Any] | None
    """The ``phase_end`` record: robust accuracy per attack, worst case, PGD traces."""

    def attack(self, prefix: str | None) -> tuple[str, dict[str, Any]] | None:
        """The phase-end attack whose label starts with ``prefix`` (default: the first)."""
        if self.evaluation is None or not self.evaluation["attacks"]:
            return None
        attacks = self.evaluation["attacks"]
        for name in self.evaluation.get("order", sorted(attacks)):
            if prefix is None or name.startswith(prefix):
                return name, attacks[name]
        return None

    def attack_names(self) -> list[str]:
        """Phase-end attack labels in the order the config lists them."""
        if self.evaluation is None:
            return []
        return list(self.evaluation.get("order", sorted(self.evaluation["attacks"])))


@dataclass(frozen=True)
class TrialSummary:
    trial: str
    model: str
    setting: str | None
    point: dict[str, Any]
    """The sweep's values for this trial (field → value)."""
    seed: int
    parameters: int
    train_seconds: float
    epochs: list[dict[str, Any]]
    phases: dict[str, PhaseNumbers]
    phase_order: list[str]
    early_stops: list[dict[str, Any]]


@dataclass(frozen=True)
class ExperimentData:
    directory: Path
    plan: Plan
    trials: list[TrialSummary]
    calibration: dict[str, Any] | None
    missing: list[str]
    """Trials of the plan that have not finished (left out of the report)."""

    @property
    def config(self) -> ExperimentConfig:
        return self.plan.config

    @property
    def options(self) -> Any:
        """The kind's report options."""
        return self.plan.options

    def models(self) -> list[str]:
        return [model.display_name for model in self.config.models]

    def settings(self) -> list[str | None]:
        """The sweep points' labels, in plan order (one None without a sweep)."""
        return list(dict.fromkeys(spec.point.label for spec in self.plan.trials))

    def group(self, setting: str | None, model: str) -> list[TrialSummary]:
        return [t for t in self.trials if t.setting == setting and t.model == model]


def collect(directory: Path, plan: Plan) -> ExperimentData:
    """The finished trials of ``plan`` in ``directory`` (run folders, calibration)."""
    folder = ExperimentDirectory(directory)
    calibration = folder.read_calibration()
    trials, missing = [], []
    for spec in plan.trials:
        run = folder.trial(spec.name)
        if not run.is_finished:
            missing.append(spec.name)
            continue
        trials.append(_summarise(run, spec.model, spec.point.label, dict(spec.point.values)))
    return ExperimentData(directory, plan, trials, calibration, missing)


def _summarise(
    run: RunDirectory, model: str, setting: str | None, point: dict[str, Any]
) -> TrialSummary:
    results = run.read_results()
    config = run.read_config()
    records = run.read_metrics()
    epochs = [record for record in records if record.get("event") == "epoch"]
    ends = {record["phase"]: record for record in records if record.get("event") == "phase_end"}
    phases = {}
    for phase in config.phases:
        last = [record for record in epochs if record["phase"] == phase.name]
        if not last:
            continue
        final = last[-1]
        phases[phase.name] = PhaseNumbers(
            phase=phase.name,
            train_acc=final.get("train_eval_acc"),
            running_train_acc=final["train_acc"],
            test_acc=final["test_acc"],
            evaluation=ends.get(phase.name),
        )
    return TrialSummary(
        trial=config.trial,
        model=model,
        setting=setting,
        point=point,
        seed=config.seed,
        parameters=int(results["parameters"]),
        train_seconds=float(results["train_seconds"]),
        epochs=epochs,
        phases=phases,
        phase_order=[phase.name for phase in config.phases],
        early_stops=[record for record in records if record.get("event") == "early_stop"],
    )
