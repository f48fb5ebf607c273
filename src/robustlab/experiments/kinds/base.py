"""The kind contract and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from robustlab.config import ExperimentConfig, StrictModel, TrialConfig, TrialSpec
from robustlab.registry import Registry

if TYPE_CHECKING:
    from robustlab.experiments.collect import ExperimentData
    from robustlab.experiments.document import Report
    from robustlab.train.reporter import TrainingReporter


class ExperimentKind(ABC):
    """One kind of experiment: its report options, checks and report."""

    name: ClassVar[str]
    description: ClassVar[str]
    options: ClassVar[type[StrictModel]]
    """Schema of the config's ``report:`` section for this kind."""

    def check(self, config: ExperimentConfig, options: Any, trials: Sequence[TrialSpec]) -> None:
        """Raise ValueError (naming the field) when the experiment cannot give this report;
        a kind that can report on any experiment keeps this default."""
        return None

    def trial_evaluation(
        self, config: ExperimentConfig, options: Any, spec: TrialSpec, trial: TrialConfig, out: Path
    ) -> Callable[[TrainingReporter], Any] | None:
        """Work to run on a trained trial before the report (a kind that measures more than
        the trainer did); None when there is none or it is already on disk. It runs through
        the experiment's executor, so it must pickle (a ``functools.partial``)."""
        return None

    def evaluation_needs(
        self, config: ExperimentConfig, options: Any, spec: TrialSpec, trial: TrialConfig
    ) -> tuple[str, ...] | None:
        """The trials whose training ``trial_evaluation``'s work reads (its own, a
        surrogate's), so that it starts as soon as they are trained; None (the default):
        every trial of the experiment, the safe answer for a kind that does not say."""
        return None

    @abstractmethod
    def report(self, data: ExperimentData, options: Any) -> Report:
        """The report's content, from what the finished trials wrote."""


def require_fixed_eps(config: ExperimentConfig, trials: Sequence[TrialSpec], what: str) -> None:
    """Refuse a calibrated threat for a kind whose evaluations need ε before training ends."""
    if config.calibration is not None or any(spec.needs_calibration for spec in trials):
        raise ValueError(f"{what} takes a fixed threat.eps, not calibrated")


class Published(StrictModel):
    """A figure from the literature, quoted beside ours (never computed)."""

    source: str
    figure: str
    setting: str = ""


KINDS: Registry[ExperimentKind] = Registry("experiment kind")

Kind = TypeVar("Kind", bound=type[ExperimentKind])


def register_kind(cls: Kind) -> Kind:
    """Class decorator: register one instance under ``cls.name``."""
    KINDS.add(cls.name, cls(), description=cls.description)
    return cls
