"""Phased training: a run is a list of phases, each an objective with its optimiser."""

from robustlab.train.objectives import OBJECTIVES, Objective, ObjectiveOutput, build_objective
from robustlab.train.trainer import TrainingReporter, TrialResult, train_trial

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveOutput",
    "TrainingReporter",
    "TrialResult",
    "build_objective",
    "train_trial",
]
