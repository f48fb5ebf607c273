"""Rebuild a trained model from its run directory, for evaluation and attacks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustlab.config import ModelConfig, TrialConfig
from robustlab.data import DatasetInfo, dataset_info
from robustlab.errors import CheckpointError
from robustlab.models import Classifier, build_model
from robustlab.store.checkpoint import apply_weights, load_training_state, load_weights
from robustlab.store.runs import RunDirectory


@dataclass(frozen=True)
class TrainedModel:
    model: nn.Module
    config: TrialConfig
    info: DatasetInfo
    weights: str
    """Which file the weights came from (final weights, or the last epoch of an unfinished run)."""


def build_for_dataset(model: ModelConfig, info: DatasetInfo) -> Classifier:
    """The configured model, freshly initialised, for the dataset's shapes and statistics."""
    return build_model(
        model.name,
        input_shape=info.input_shape,
        num_classes=info.num_classes,
        mean=info.mean,
        std=info.std,
        **model.options,
    )


def load_trained_model(
    run: RunDirectory, device: torch.device, phase: str | None = None
) -> TrainedModel:
    """The run's final weights (or its last checkpoint, if unfinished); with ``phase``, the
    weights at the end of that phase. Each file is checked against its recorded sha256."""
    config = run.read_config()
    info = dataset_info(config.data.dataset)
    model = build_for_dataset(config.model, info)
    if phase is not None:
        names = [p.name for p in config.phases]
        if phase not in names:
            raise CheckpointError(f"run {run.path} has no phase {phase!r}; phases: {names}")
        source = run.phase_weights(phase)
        apply_weights(model, load_weights(source), source)
    elif run.final_weights.exists():
        source = run.final_weights
        apply_weights(model, load_weights(source), source)
    else:
        source = run.last_checkpoint
        apply_weights(model, load_training_state(source).model, source)
    model.to(device).eval()
    return TrainedModel(model=model, config=config, info=info, weights=str(source))
