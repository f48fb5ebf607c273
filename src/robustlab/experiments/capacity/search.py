"""The capacity search: bisection, in log scale, for the largest set a model fits.

Sets are nested (the first n training images, with labels drawn once per repeat for the
largest set), so a bigger set always contains a smaller one and fitting is close to
monotone in n. The smallest set is tried first: if even it does not fit, the budget is too
small to measure anything, and the search stops with an error naming the fields to change
before spending more. Every attempt is saved as it finishes (``CapacityStore``), so a killed
search resumes where it stopped.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from robustlab.config import AttackConfig
from robustlab.data import Split, dataset_info, load_split
from robustlab.device import resolve_device
from robustlab.errors import ConfigError
from robustlab.experiments.capacity.fitting import Attempt, attempt
from robustlab.experiments.capacity.settings import CapacitySettings
from robustlab.experiments.capacity.store import CapacityStore
from robustlab.experiments.capacity.targets import Target
from robustlab.models import count_parameters
from robustlab.store.loading import build_for_dataset

DEFAULT_ROBUST_STEPS = 10


@dataclass(frozen=True)
class SearchResult:
    capacity: int
    """The largest set fitted."""
    upper: int | None
    """The smallest set not fitted (None: even the largest set fitted, so capacity is a lower
    bound)."""
    attempts: list[Attempt]


def robust_attack(settings: CapacitySettings, target: Target) -> AttackConfig | None:
    """The attack the robust measure fits against (None for memorisation)."""
    if settings.measure == "memorisation":
        return None
    attack = settings.attack or AttackConfig.model_validate(
        {"name": "pgd", "steps": DEFAULT_ROBUST_STEPS}
    )
    if attack.inherits("eps"):
        if target.eps is None:
            raise ConfigError(
                f"{target.label}: the robust measure needs an ε: give attack.eps, or measure "
                "a run or config whose last phase trains against an attack"
            )
        attack = AttackConfig.model_validate(
            {"name": attack.name, **attack.params, "eps": target.eps}
        )
    attack.build()  # an impossible budget fails here, before any training
    return attack


def training_images(target: Target, settings: CapacitySettings) -> Split:
    """The dataset's training split, refused if it has fewer than ``max_images`` images."""
    train = load_split(target.dataset, "train", target.data_root)
    if settings.max_images > len(train):
        raise ConfigError(
            f"max_images: {settings.max_images} asked for, but {target.dataset} has "
            f"{len(train)} training images"
        )
    return train


def measure_target(
    target: Target,
    settings: CapacitySettings,
    store: CapacityStore,
    status: Callable[[str], None],
) -> dict[str, Any]:
    """Every repeat's search for one architecture, and their spread."""
    info = dataset_info(target.dataset)
    train = training_images(target, settings)
    device = resolve_device(target.device)
    attack = robust_attack(settings, target)

    def build() -> torch.nn.Module:
        return build_for_dataset(target.model, info)

    images = train.images[: settings.max_images]
    repeats: list[dict[str, Any]] = []
    for repeat in range(settings.repeats):
        labels = _labels(train.labels[: settings.max_images], info.num_classes, settings, repeat)

        def probe(count: int, repeat: int = repeat, labels: torch.Tensor = labels) -> Attempt:
            cached = store.attempt(target, repeat, count)
            if cached is not None:
                return cached
            status(f"{target.label}: repeat {repeat + 1}/{settings.repeats}, {count} images")
            found = attempt(build, images[:count], labels[:count], settings, attack, repeat, device)
            store.save_attempt(target, repeat, found)
            return found

        result = bisect(probe, settings, target)
        repeats.append(
            {
                "repeat": repeat,
                "capacity": result.capacity,
                "upper": result.upper,
                "attempts": [a.to_dict() for a in result.attempts],
            }
        )
    capacities = [entry["capacity"] for entry in repeats]
    return {
        "label": target.label,
        "model": {"name": target.model.name, "options": target.model.options},
        "dataset": target.dataset,
        "parameters": count_parameters(build()),
        "attack": None if attack is None else attack.model_dump(mode="json"),
        "repeats": repeats,
        "capacity_mean": statistics.fmean(capacities),
        "capacity_std": statistics.stdev(capacities) if len(capacities) > 1 else None,
        "lower_bound": any(entry["upper"] is None for entry in repeats),
        # what the search cost, summed over its attempts (so a resumed search counts the
        # attempts it read back too)
        "seconds": round(sum(a["seconds"] for entry in repeats for a in entry["attempts"]), 3),
    }


def _labels(
    true: torch.Tensor, classes: int, settings: CapacitySettings, repeat: int
) -> torch.Tensor:
    """Random labels for memorisation (drawn once per repeat for the largest set); the true
    ones for the robust measure."""
    if settings.measure == "robust":
        return true
    generator = torch.Generator().manual_seed(repeat)
    return torch.randint(classes, true.shape, generator=generator)


def bisect(
    probe: Callable[[int], Attempt], settings: CapacitySettings, target: Target
) -> SearchResult:
    attempts = [probe(settings.min_images)]
    if not attempts[0].fitted:
        floor = "" if settings.min_steps is None else f", min_steps={settings.min_steps}"
        raise ConfigError(
            f"capacity of {target.label}: even the smallest set (min_images="
            f"{settings.min_images}) was not fitted to {settings.threshold:.0%} within "
            f"{attempts[0].epochs} epochs (epochs={settings.epochs}{floor}) at "
            f"lr={settings.lr:g} (it reached {attempts[0].accuracy:.1%}): raise epochs, "
            "min_steps or lr, or lower min_images"
        )
    attempts.append(probe(settings.max_images))
    if attempts[-1].fitted:
        return SearchResult(settings.max_images, None, attempts)
    low, high = settings.min_images, settings.max_images
    while high > low * (1 + settings.resolution) and high - low > 1:
        middle = min(high - 1, max(low + 1, round(math.sqrt(low * high))))
        attempts.append(probe(middle))
        if attempts[-1].fitted:
            low = middle
        else:
            high = middle
    return SearchResult(low, high, attempts)
