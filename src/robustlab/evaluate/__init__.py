"""Evaluation: clean accuracy, and robust accuracy per attack and for the worst case."""

from robustlab.evaluate.accuracy import AccuracyResult, evaluate_accuracy
from robustlab.evaluate.robust import AttackResult, RobustnessReport, robust_accuracy

__all__ = [
    "AccuracyResult",
    "AttackResult",
    "RobustnessReport",
    "evaluate_accuracy",
    "robust_accuracy",
]
