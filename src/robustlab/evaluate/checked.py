"""``robustlab eval --attack``: robust accuracy of a run's deployed model (with its
``model.defenses``, fitted once) under each attack, with the sanity checks beside each.

The result is written to the run's ``attacks/`` folder (atomically) so the figures on screen
are on disk with the checks that qualify them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustlab.attacks.base import Attack
from robustlab.data import load_split
from robustlab.defenses import Gradients
from robustlab.errors import ConfigError
from robustlab.evaluate.accuracy import require_positive
from robustlab.evaluate.defended import AttackPlan, deployed_answers, evaluate_plan
from robustlab.evaluate.defended_run import automatic_gradients, load_defended
from robustlab.evaluate.labels import attack_key
from robustlab.evaluate.sanity import Check, CheckSettings, run_checks
from robustlab.io import atomic_write_json
from robustlab.provenance import provenance
from robustlab.store.runs import RunDirectory


@dataclass(frozen=True)
class CheckedAttack:
    name: str
    plan: dict[str, Any]
    summary: dict[str, Any]
    checks: list[Check] = field(default_factory=list)

    @property
    def flagged(self) -> list[str]:
        return [check.name for check in self.checks if not check.passed]


@dataclass(frozen=True)
class CheckedEvaluation:
    defenses: list[str]
    images: int
    clean_accuracy: float
    false_positive_rate: float | None
    attacks: list[CheckedAttack]
    results_file: Path
    worst_case_accuracy: float | None = None
    """Robust only if every attack failed on the image (with several attacks)."""


def evaluate_with_checks(
    run: RunDirectory,
    attacks: Sequence[Attack],
    *,
    count: int,
    batch_size: int,
    device: torch.device,
    gradients: Gradients | None = None,
    eot: int = 10,
    settings: CheckSettings | None = None,
    data_root: Path | None = None,
) -> CheckedEvaluation:
    """Each attack on the first ``count`` test images of the run's deployed model, with
    ``gradients`` (None: what the run's defense calls for, ``automatic_gradients``)."""
    require_positive("--n", count, "test images to attack")
    require_positive("--batch-size", batch_size, "images per attack batch")
    if not attacks:
        raise ConfigError("evaluate_with_checks needs at least one attack")
    loaded = load_defended(run, device, data_root=data_root)
    defended, info = loaded.model, loaded.trained.info
    for attack in attacks:
        attack.check_budget(info.input_shape)
    chosen = gradients if gradients is not None else automatic_gradients(defended, eot)
    plans = [AttackPlan(attack=attack, gradients=chosen) for attack in attacks]
    test = load_split(info.name, "test", data_root or loaded.trained.config.data.root)
    x, y = test.images[:count].to(device), test.labels[:count].to(device)
    seed = loaded.trained.config.seed
    predicted, rejected = deployed_answers(defended, x, seed)
    results = []
    held = predicted == y
    black_box: dict[tuple[float, str], float] = {}
    for attack, plan in zip(attacks, plans, strict=True):
        scored = evaluate_plan(defended, x, y, plan, batch_size=batch_size, seed=seed)
        held &= scored.robust
        checks = run_checks(
            defended,
            x,
            y,
            plan,
            scored.robust,
            settings=settings or CheckSettings(),
            seed=seed,
            batch_size=batch_size,
            black_box_memo=black_box,
        )
        results.append(CheckedAttack(attack_key(attack), plan.describe(), scored.summary(), checks))
    clean = float((predicted == y).float().mean())
    false_positives = float(rejected.float().mean()) if defended.has_detectors else None
    worst = float(held.float().mean()) if len(results) > 1 else None
    evaluation = {
        "weights": loaded.trained.weights,
        "defenses": defended.names,
        "images": len(y),
        "clean_accuracy": clean,
        "false_positive_rate": false_positives,
        "worst_case_acc": worst,
        "attacks": [
            {
                "name": item.name,
                "attack": item.plan,
                **item.summary,
                "checks": [check.to_dict() for check in item.checks],
                "flagged": item.flagged,
            }
            for item in results
        ],
        "provenance": provenance(),
    }
    label = "+".join(item.name for item in results)
    path = atomic_write_json(run.path / "attacks" / f"checked-{label}-n{len(y)}.json", evaluation)
    return CheckedEvaluation(
        defenses=defended.names,
        images=len(y),
        clean_accuracy=clean,
        false_positive_rate=false_positives,
        attacks=results,
        results_file=path,
        worst_case_accuracy=worst,
    )
