"""Experiments: many trials (models × seeds) run, resumed and summarised together."""

from robustlab.experiments.runner import ExperimentResult, run_experiment

__all__ = ["ExperimentResult", "run_experiment"]
