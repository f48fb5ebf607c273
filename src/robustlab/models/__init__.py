"""Models: a registry of architectures, each built as ``Normalize`` followed by its body.

Models take inputs in [0, 1] pixel space; normalisation is their first layer, so attack budgets
(ε) are always in pixel units. ``build_model`` is the one way to construct them.
"""

from __future__ import annotations

from robustlab.models.building import build_model, count_parameters, model_options
from robustlab.models.catalog import MODELS, ModelBuilder
from robustlab.models.classifier import Classifier
from robustlab.models.cost import count_multiply_adds
from robustlab.models.normalize import Normalize

__all__ = [
    "MODELS",
    "Classifier",
    "ModelBuilder",
    "Normalize",
    "build_model",
    "count_multiply_adds",
    "count_parameters",
    "model_options",
]
