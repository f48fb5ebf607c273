"""Capacity measures (``robustlab capacity``): memorisation capacity (Zhang et al. 2017) and
its robust analogue, each found by bisection within a fixed, recorded budget, with the
spread over repeats; the cheap proxies (parameters, depth, width) beside them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from robustlab.experiments.capacity.search import (
    bisect,
    measure_target,
    robust_attack,
    training_images,
)
from robustlab.experiments.capacity.settings import CapacitySettings
from robustlab.experiments.capacity.store import CapacityStore, capacity_file
from robustlab.experiments.capacity.targets import Target, Targets, find_targets

__all__ = [
    "CapacitySettings",
    "CapacityStore",
    "Target",
    "Targets",
    "bisect",
    "capacity_file",
    "find_targets",
    "measure_capacity",
    "robust_attack",
]


def measure_capacity(
    source: Path,
    settings: CapacitySettings,
    *,
    out: Path = Path("runs"),
    file: Path | None = None,
    status: Callable[[str], None] = lambda _: None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Search every architecture behind ``source``; returns the results file and its results.

    Every target's attack and data are checked first, so an impossible budget or set size
    fails before any training.
    """
    found = find_targets(source, out)
    checked: set[str] = set()
    for target in found.targets:
        robust_attack(settings, target)
        if target.dataset not in checked:
            training_images(target, settings)
            checked.add(target.dataset)
    path = file or capacity_file(found.folder, settings)
    store = CapacityStore(path, settings)
    results = []
    for target in found.targets:
        result = measure_target(target, settings, store, status)
        store.save_result(target, result)
        results.append(result)
    return path, results
