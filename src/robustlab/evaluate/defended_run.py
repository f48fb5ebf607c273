"""A trained run rebuilt with its defenses (``model.defenses``), fitted once and reused.

Detectors learn from training images (MagNet's autoencoder, every detector's threshold); the
fitted defense is saved beside the run's weights (``defense.safetensors``, with its checksum)
so ``robustlab eval``/``attack`` and the defenses experiment score the same defense, and a
re-run does not fit it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from robustlab.data import load_split
from robustlab.defenses import DefendedModel, FitData, Gradients, build_defended
from robustlab.evaluate.defended import seeded
from robustlab.store.checkpoint import load_weights, save_weights
from robustlab.store.loading import TrainedModel, load_trained_model
from robustlab.store.runs import RunDirectory

FITTED_FILE = "defense.safetensors"


@dataclass(frozen=True)
class FitSettings:
    fit_images: int = 10_000
    """The first N training images detectors learn from."""
    held_out_images: int = 2000
    """The last N training images, which set the thresholds."""


@dataclass(frozen=True)
class DefendedRun:
    trained: TrainedModel
    model: DefendedModel
    fit_seconds: float | None
    """Time spent fitting now (None: nothing to fit, or reloaded)."""


def load_defended(
    run: RunDirectory,
    device: torch.device,
    *,
    fit: FitSettings | None = None,
    data_root: Path | None = None,
) -> DefendedRun:
    """The run's classifier wrapped in its configured defenses, fitted (or reloaded)."""
    trained = load_trained_model(run, device)
    info = trained.info
    specs = [defense.spec() for defense in trained.config.model.defenses]
    defended = build_defended(trained.model, specs, info.input_shape, info.num_classes)
    defended = defended.to(device).eval()
    seconds = None
    if defended.has_detectors:
        seconds = _fit_or_load(defended, run, fit or FitSettings(), data_root, device)
    return DefendedRun(trained=trained, model=defended, fit_seconds=seconds)


def _fit_or_load(
    defended: DefendedModel,
    run: RunDirectory,
    settings: FitSettings,
    data_root: Path | None,
    device: torch.device,
) -> float | None:
    path = run.path / FITTED_FILE
    if path.exists():
        defended.load_state_dict(load_weights(path))
        defended.to(device)
        return None
    config = run.read_config()
    started = time.perf_counter()
    train = load_split(config.data.dataset, "train", data_root or config.data.root).images
    held = min(settings.held_out_images, len(train) // 2)
    data = FitData(
        train=train[: min(settings.fit_images, len(train) - held)].to(device),
        held_out=train[len(train) - held :].to(device),
        seed=config.seed,
    )
    with seeded(config.seed):
        defended.fit(data)
    save_weights(path, defended.state_dict())
    return round(time.perf_counter() - started, 3)


def automatic_gradients(defended: DefendedModel, eot: int) -> Gradients:
    """The gradients the defense calls for: BPDA through what is not differentiable (and
    through squeezers inside detectors), EOT over what is random, joint with detectors."""
    squeezing = any(hasattr(d, "straight_through") for d in defended.detector_list)
    return Gradients(
        bpda=bool(defended.non_differentiable) or squeezing,
        eot=eot if defended.randomized else 1,
        joint=defended.has_detectors,
    )
