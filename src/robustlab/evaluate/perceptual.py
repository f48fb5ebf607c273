"""Perceptual alignment (thesis Ch. 4.2): what an unbounded targeted attack draws.

With ε = 1 the L∞ ball is the whole [0, 1] box, so the attack may paint any image; what it
paints while pushing toward a target class shows what the model has learned to look for. A
standard model's images stay noise-like, a robust model's grow strokes of the target class
(Tsipras et al. 2019). The attack is ILCM's iteration — targeted BIM from the clean input —
aimed at every class in turn rather than only the least likely one, from the same starting
images for each model, so the two models' rows compare picture by picture.

By default the two models are one run's weights at the end of its first phase (standard
training) and its final weights (after adversarial training); ``compare`` names another run
whose final weights are compared with this run's instead. Results (per-target success and mean
L2 of the perturbation per model) go into ``RUN/attacks/`` as JSON, the picture as PNG.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.attacks.iterative import BIM
from robustlab.data import dataset_info, load_split
from robustlab.errors import ConfigError
from robustlab.evaluate.accuracy import require_positive
from robustlab.evaluate.gallery import save_target_grid
from robustlab.io import atomic_write_json
from robustlab.modes import eval_mode
from robustlab.precision import Precision
from robustlab.provenance import provenance
from robustlab.store.loading import TrainedModel, load_trained_model
from robustlab.store.runs import RunDirectory

UNBOUNDED_EPS = 1.0
"""The L∞ ball of radius 1 around any image in [0, 1] contains the whole box."""
DEFAULT_STEPS = 200
DEFAULT_ALPHA = 0.01
"""200 steps of 0.01 can carry a pixel across the box twice over."""
DEFAULT_COUNT = 3


@dataclass(frozen=True)
class ComparedModel:
    """A model to draw with, and where its weights came from."""

    label: str
    model: nn.Module
    weights: str


@dataclass(frozen=True)
class TargetedImages:
    """One model's images toward every class, from the shared starting images."""

    label: str
    weights: str
    clean_predictions: torch.Tensor
    """(n,) the model's class for each starting image."""
    images: torch.Tensor
    """(n, classes, *input_shape): image i pushed toward class t."""
    predictions: torch.Tensor
    """(n, classes): the model's class for each of those images."""

    def success(self) -> torch.Tensor:
        """(classes,) share of the starting images that reached each target."""
        targets = torch.arange(self.predictions.shape[1], device=self.predictions.device)
        return (self.predictions == targets).float().mean(dim=0)

    def mean_l2(self, starts: torch.Tensor) -> torch.Tensor:
        """(classes,) mean L2 size of the perturbation toward each target."""
        delta = (self.images - starts.unsqueeze(1)).flatten(2)
        sizes: torch.Tensor = delta.norm(dim=2)
        return sizes.mean(dim=0)


@dataclass(frozen=True)
class PerceptualOutcome:
    starts: torch.Tensor
    labels: torch.Tensor
    models: tuple[TargetedImages, ...]
    results_file: Path
    figure_file: Path | None


def unbounded_attack(
    steps: int = DEFAULT_STEPS,
    alpha: float = DEFAULT_ALPHA,
    *,
    seed: int = 0,
    precision: Precision = "fp32",
) -> BIM:
    """Targeted ILCM without a budget: BIM over the whole box, every step taken."""
    return BIM(eps=UNBOUNDED_EPS, steps=steps, alpha=alpha, seed=seed, precision=precision)


def toward_every_class(
    model: nn.Module,
    attack: BIM,
    x: torch.Tensor,
    classes: int,
    *,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, classes, ...) of ``x`` pushed toward each class, and the model's predictions
    (n, classes) for them. Each starting image is repeated once per class, so one batched
    call serves every target."""
    require_positive("batch_size", batch_size, "images per attack batch")
    repeated = x.repeat_interleave(classes, dim=0)
    targets = torch.arange(classes, device=x.device).repeat(len(x))
    images, predictions = [], []
    for start in range(0, len(repeated), batch_size):
        part = slice(start, start + batch_size)
        # the label is unused by a targeted BIM; the target stands in for it
        x_adv = attack(model, repeated[part], targets[part], target=targets[part])
        with torch.no_grad(), eval_mode(model):
            predictions.append(model(x_adv).argmax(dim=1))
        images.append(x_adv)
    shape = (len(x), classes, *x.shape[1:])
    return torch.cat(images).view(shape), torch.cat(predictions).view(len(x), classes)


def compared_models(
    run: RunDirectory, device: torch.device, compare: RunDirectory | None = None
) -> tuple[ComparedModel, ComparedModel]:
    """The two models to draw with: ``run`` after its first phase and at the end, or ``run``'s
    and ``compare``'s final weights."""
    if compare is not None:
        ours, theirs = load_trained_model(run, device), load_trained_model(compare, device)
        if ours.info.name != theirs.info.name:
            raise ConfigError(
                f"cannot compare {run.path} ({ours.info.name}) with {compare.path} "
                f"({theirs.info.name}): the runs must use the same dataset"
            )
        return _compared(ours, f"{run.path.name}: final"), _compared(
            theirs, f"{compare.path.name}: final"
        )
    phases = [phase.name for phase in run.read_config().phases]
    if len(phases) < 2:
        raise ConfigError(
            f"run {run.path} has one phase ({phases[0]!r}), so there is no standard-trained "
            "model to set beside a robust one: compare with another run (--compare "
            "OTHER_RUN_DIR)"
        )
    standard = load_trained_model(run, device, phase=phases[0])
    final = load_trained_model(run, device)
    return _compared(standard, f"after phase {phases[0]!r}"), _compared(final, "final")


def perceptual_alignment(
    run: RunDirectory,
    *,
    count: int = DEFAULT_COUNT,
    steps: int = DEFAULT_STEPS,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    precision: Precision = "fp32",
    device: torch.device,
    compare: RunDirectory | None = None,
    data_root: Path | None = None,
    batch_size: int = 256,
    save_figure: bool = True,
) -> PerceptualOutcome:
    """Attack the first ``count`` test images toward every class with each of the two models;
    write the JSON (and with ``save_figure`` the PNG grid) into ``run``'s ``attacks/``."""
    require_positive("count", count, "starting images")
    attack = unbounded_attack(steps, alpha, seed=seed, precision=precision)
    models = compared_models(run, device, compare)
    config = run.read_config()
    info = dataset_info(config.data.dataset)
    test = load_split(info.name, "test", data_root or config.data.root)
    x, y = test.images[:count], test.labels[:count]
    drawn = []
    for entry in models:
        with torch.no_grad(), eval_mode(entry.model):
            clean = entry.model(x.to(device)).argmax(dim=1)
        images, predictions = toward_every_class(
            entry.model, attack, x.to(device), info.num_classes, batch_size=batch_size
        )
        drawn.append(
            TargetedImages(entry.label, entry.weights, clean.cpu(), images.cpu(), predictions.cpu())
        )
    label = _file_label(attack, len(x), compare)
    figure_file = None
    if save_figure:
        figure_file = save_target_grid(
            run.path / "attacks" / f"{label}.png",
            x,
            [(d.label, d.clean_predictions, d.images, d.predictions) for d in drawn],
            info.class_names,
            title=f"{label}: unbounded targeted ILCM (ε = 1, {steps} steps of {alpha:g}); "
            "columns: target class (red = not reached)",
        )
    record = _record(attack, x, y, drawn, info.class_names, figure_file)
    record["runs"] = [str(run.path)] + ([] if compare is None else [str(compare.path)])
    results_file = atomic_write_json(run.path / "attacks" / f"{label}.json", record)
    return PerceptualOutcome(x, y, tuple(drawn), results_file, figure_file)


def _compared(trained: TrainedModel, label: str) -> ComparedModel:
    return ComparedModel(label, trained.model, trained.weights)


def _file_label(attack: BIM, count: int, compare: RunDirectory | None) -> str:
    label = f"ilcm-unbounded-steps{attack.steps}-alpha{attack.step_size:g}-n{count}"
    label += f"-seed{attack.seed}"
    if compare is not None:
        label += "-vs-" + re.sub(r"[^A-Za-z0-9._-]", "_", compare.path.resolve().name)
    return label


def _record(
    attack: BIM,
    x: torch.Tensor,
    y: torch.Tensor,
    drawn: Sequence[TargetedImages],
    class_names: Sequence[str],
    figure_file: Path | None,
) -> dict[str, Any]:
    models = []
    for entry in drawn:
        success, l2 = entry.success().tolist(), entry.mean_l2(x).tolist()
        models.append(
            {
                "label": entry.label,
                "weights": entry.weights,
                "clean_predictions": entry.clean_predictions.tolist(),
                "success": float(entry.success().mean()),
                "mean_l2": float(entry.mean_l2(x).mean()),
                "per_target": [
                    {"target": t, "class": class_names[t], "success": success[t], "mean_l2": l2[t]}
                    for t in range(len(success))
                ],
            }
        )
    return {
        "mode": "unbounded targeted ILCM toward every class",
        "attack": attack.describe(),
        "images": len(x),
        "start_labels": y.tolist(),
        "models": models,
        "figure": None if figure_file is None else figure_file.name,
        "provenance": provenance(),
    }
