"""Evaluation: clean accuracy now; robust accuracy per attack and worst case with the attacks."""

from robustlab.evaluate.accuracy import AccuracyResult, evaluate_accuracy

__all__ = ["AccuracyResult", "evaluate_accuracy"]
