"""What the trainer measures besides clean accuracy: attacks after every epoch, the strong
evaluation at the end of every phase, and the catastrophic-overfitting check.

Every attack here runs on fixed images (the first N test images, or a fixed probe of training
images), so numbers from different epochs, seeds and models are comparable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from robustlab.attacks.base import Attack
from robustlab.attacks.iterative import PGD
from robustlab.config.attacks import AttackConfig
from robustlab.config.objectives import OverfittingCheckConfig
from robustlab.evaluate.labels import unique_keys
from robustlab.evaluate.robust import robust_accuracy
from robustlab.provenance import now_iso
from robustlab.train.objectives import Objective


def build_attacks(configs: Sequence[AttackConfig]) -> dict[str, Attack]:
    """The attacks by their labels (see ``robustlab.evaluate.labels``), in config order."""
    return unique_keys([config.build() for config in configs])


def epoch_attack_metrics(
    model: nn.Module,
    attacks: dict[str, Attack],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
) -> dict[str, dict[str, float]]:
    """Robust accuracy and success rate of each attack on the fixed test images."""
    if not attacks:
        return {}
    report = robust_accuracy(model, (x, y), attacks, device=device, batch_size=batch_size)
    return {
        result.name: {
            "robust_acc": result.robust_accuracy,
            "success_rate": result.success_rate,
            "seconds": result.seconds,
        }
        for result in report.attacks
    }


def phase_end_evaluation(
    model: nn.Module,
    attacks: dict[str, Attack],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    limits: dict[str, int | None] | None = None,
) -> dict[str, Any]:
    """The strong evaluation: every attack, the per-example worst case, and for PGD the
    success after each step (the thesis's "attack statistics")."""
    report = robust_accuracy(
        model, (x, y), attacks, device=device, batch_size=batch_size, trace=True, limits=limits
    )
    return {
        "images": report.count,
        "clean_acc": report.clean_accuracy,
        "worst_case_acc": report.worst_case_accuracy,
        "worst_case_success_rate": report.worst_case_success_rate,
        "worst_case_images": report.worst_case_count,
        "order": [result.name for result in report.attacks],
        "attacks": {
            result.name: {
                "robust_acc": result.robust_accuracy,
                "success_rate": result.success_rate,
                "seconds": result.seconds,
                "images": result.count,
                "parameters": _plain(result.parameters),
                **({"trace": result.trace} if result.trace is not None else {}),
            }
            for result in report.attacks
        },
    }


def evaluate_phase_end(
    model: nn.Module,
    configs: Sequence[AttackConfig],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    phase: str,
    phase_index: int,
    epoch: int,
    global_epoch: int,
    batch_size: int,
    device: torch.device,
    status: Callable[[str], None],
) -> dict[str, Any] | None:
    """The ``phase_end`` line of metrics.jsonl for ``configs`` (None when there are none),
    announced through ``status`` before and after; shared by the trainer and the shared-phase
    evaluation."""
    attacks = build_attacks(configs)
    if not attacks:
        return None
    status(f"end of phase {phase}: {', '.join(attacks)}")
    limits = dict(zip(attacks, (config.images for config in configs), strict=True))
    started = time.perf_counter()
    evaluation = phase_end_evaluation(
        model, attacks, x, y, batch_size=batch_size, device=device, limits=limits
    )
    record = {
        "event": "phase_end",
        "phase": phase,
        "phase_index": phase_index,
        "epoch": epoch,
        "global_epoch": global_epoch,
        **evaluation,
        "seconds": round(time.perf_counter() - started, 3),
        "time": now_iso(),
    }
    status(phase_end_summary(record))
    return record


def phase_end_summary(record: dict[str, Any]) -> str:
    """One line for the console: robust accuracy per attack and the worst case."""
    parts = [f"{name} {result['robust_acc']:.2%}" for name, result in record["attacks"].items()]
    return (
        f"end of phase {record['phase']}: clean {record['clean_acc']:.2%}, "
        + ", ".join(parts)
        + f", worst case {record['worst_case_acc']:.2%} ({record['seconds']:.0f}s)"
    )


def check_overfitting(
    model: nn.Module,
    objective: Objective,
    config: OverfittingCheckConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    best_pgd_acc: float | None,
    *,
    batch_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """Accuracy on the probe under the training attack and under PGD at the same ε; flagged
    when the gap, or the drop of PGD accuracy below its best, exceeds the configured limits."""
    attack = objective.training_attack()
    eps = None if attack is None else attack.budget
    if attack is None or eps is None or attack.threat not in ("linf", "l2", "l1"):
        raise ValueError("the overfitting check needs an objective whose attack has a norm budget")
    pgd = PGD(eps=eps, steps=config.pgd_steps, norm=attack.threat, seed=attack.seed)  # type: ignore[arg-type]
    scored = robust_accuracy(
        model, (x, y), {"train": attack, "pgd": pgd}, device=device, batch_size=batch_size
    )
    train_acc, pgd_acc = (result.robust_accuracy for result in scored.attacks)
    gap = train_acc - pgd_acc
    drop = 0.0 if best_pgd_acc is None else max(0.0, best_pgd_acc - pgd_acc)
    return {
        "train_attack_acc": train_acc,
        "pgd_acc": pgd_acc,
        "pgd_steps": config.pgd_steps,
        "gap": gap,
        "drop": drop,
        "flagged": gap > config.max_gap or drop > config.max_drop,
        "action": config.action,
    }


def fixed_subset(count: int, size: int, seed: int) -> torch.Tensor:
    """``size`` indices of ``count``, the same for a given seed (sorted, for locality)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[: min(size, count)].sort().values


def _plain(parameters: dict[str, Any]) -> dict[str, Any]:
    """Attack parameters as JSON values (tuples become lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in parameters.items()
    }
