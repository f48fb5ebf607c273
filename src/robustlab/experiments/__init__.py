"""Experiments: a config expanded once into a plan of trials (models × sweep points × seeds),
run by an executor (serial, processes or Ray), recorded in a trial index and reported by the
experiment's kind.

Modules, in import order: ``tables`` and ``document`` (a report as data), ``collect`` (an
experiment folder read back), ``kinds`` (what each kind's report shows), ``plan`` (expansion
and checks), ``shared`` and ``calibrating`` (shared phases, the calibrated ε), ``executors``,
``runner``, ``reporting`` and ``page`` (writing the report). This package imports config,
store, train, evaluate, models and data; nothing below it imports it.
"""

from robustlab.experiments.plan import Plan, build_plan
from robustlab.experiments.runner import ExperimentResult, run_experiment

__all__ = ["ExperimentResult", "Plan", "build_plan", "run_experiment"]
