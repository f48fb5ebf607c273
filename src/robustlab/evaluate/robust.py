"""Robust accuracy per attack and for the per-example worst case over all attacks.

Every attack runs on the examples the model classifies correctly when clean (a misclassified
example is already non-robust), independently of the other attacks, so each attack's number
stands on its own; the worst case counts an example as robust only if every attack failed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from robustlab.attacks.base import Attack
from robustlab.batching import chunked_forward
from robustlab.errors import ConfigError
from robustlab.evaluate.accuracy import require_positive
from robustlab.modes import eval_mode


@dataclass(frozen=True)
class AttackResult:
    name: str
    parameters: dict[str, Any]
    robust_accuracy: float
    """Share of all examples still classified correctly after the attack."""
    success_rate: float
    """Share of the clean-correct examples the attack fooled."""
    seconds: float
    trace: list[float] | None = None
    """With ``trace=True``, for traceable attacks: success rate after 0, 1, ..., steps steps."""
    count: int = 0
    """Examples this attack was evaluated on (fewer than the report's with ``limits``)."""


@dataclass(frozen=True)
class RobustnessReport:
    count: int
    clean_accuracy: float
    attacks: list[AttackResult]
    worst_case_accuracy: float
    worst_case_success_rate: float
    worst_case_count: int = 0
    """Examples the worst case is over: those every attack saw."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def robust_accuracy(
    model: nn.Module,
    data: Batches | tuple[torch.Tensor, torch.Tensor],
    attacks: Mapping[str, Attack] | Sequence[Attack],
    *,
    device: torch.device | None = None,
    batch_size: int = 256,
    trace: bool = False,
    limits: Mapping[str, int | None] | None = None,
) -> RobustnessReport:
    """Evaluate ``attacks`` on ``data`` (a loader of (x, y) batches, or one (x, y) pair).

    With ``trace``, single-run traceable attacks (PGD's family) also record their success
    after every step.
    ``limits`` restricts an attack (by name) to the first N examples, for attacks too costly
    to run on all; the worst case is then taken over the examples every attack saw.
    """
    named = _named(attacks)
    require_positive("robust_accuracy: batch_size", batch_size)
    for name, attack in named.items():
        if attack.targeted_only:
            raise ConfigError(
                f"attack {name!r} is targeted only (it needs a target class per image); "
                "robust accuracy is untargeted: choose an untargeted attack"
            )
    limit = {name: (limits or {}).get(name) or math.inf for name in named}
    common = min(limit.values())
    traced = {name for name, attack in named.items() if trace and _traceable(attack)}
    fooled_by_step: dict[str, torch.Tensor] = {}
    target_device = device or next(model.parameters()).device
    total = clean_correct = 0
    seen = dict.fromkeys(named, 0)
    clean_seen = dict.fromkeys(named, 0)
    survived = dict.fromkeys(named, 0)
    worst_seen = worst_clean = worst_survived = 0
    seconds = dict.fromkeys(named, 0.0)
    for x, y in _batches(data, batch_size):
        x, y = x.to(target_device), y.to(target_device)
        if total == 0:  # every budget is judged against the inputs before any attack runs
            for attack in named.values():
                attack.check_budget(x.shape[1:])
        position = torch.arange(total, total + len(y), device=target_device)
        total += len(y)
        with torch.no_grad(), eval_mode(model):
            correct = chunked_forward(model, x).argmax(dim=1) == y
        clean_correct += int(correct.sum())
        robust_all = correct.clone()
        for name, attack in named.items():
            within = position < limit[name]
            seen[name] += int(within.sum())
            index = (correct & within).nonzero().squeeze(1)
            clean_seen[name] += len(index)
            if len(index) == 0:
                continue
            started = time.perf_counter()
            outcome = attack.run(model, x[index], y[index], trace=name in traced)
            if outcome.trace is not None:
                earlier = fooled_by_step.get(name)
                fooled_by_step[name] = outcome.trace if earlier is None else earlier + outcome.trace
            x_adv = outcome.x_adv
            seconds[name] += time.perf_counter() - started
            with torch.no_grad(), eval_mode(model):
                still = chunked_forward(model, x_adv).argmax(dim=1) == y[index]
            survived[name] += int(still.sum())
            robust_all[index[~still]] = False
        in_common = position < common
        worst_seen += int(in_common.sum())
        worst_clean += int((correct & in_common).sum())
        worst_survived += int((robust_all & in_common).sum())
    if total == 0:
        raise ValueError("robust_accuracy got no examples")
    results = [
        AttackResult(
            name=name,
            parameters=attack.describe(),
            robust_accuracy=survived[name] / seen[name],
            success_rate=_rate(clean_seen[name] - survived[name], clean_seen[name]),
            seconds=round(seconds[name], 3),
            trace=_trace_rates(fooled_by_step.get(name), clean_seen[name])
            if name in traced
            else None,
            count=seen[name],
        )
        for name, attack in named.items()
    ]
    return RobustnessReport(
        count=total,
        clean_accuracy=clean_correct / total,
        attacks=results,
        worst_case_accuracy=worst_survived / worst_seen,
        worst_case_success_rate=_rate(worst_clean - worst_survived, worst_clean),
        worst_case_count=worst_seen,
    )


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _traceable(attack: Attack) -> bool:
    """A trace follows one run, so attacks with several restarts are evaluated untraced."""
    return attack.traceable and getattr(attack, "restarts", 1) == 1


def _trace_rates(counts: torch.Tensor | None, clean_correct: int) -> list[float]:
    if counts is None:  # every example was misclassified when clean: nothing was attacked
        return []
    return [round(_rate(int(count), clean_correct), 6) for count in counts]


def _named(attacks: Mapping[str, Attack] | Sequence[Attack]) -> dict[str, Attack]:
    if isinstance(attacks, Mapping):
        named = dict(attacks)
    else:
        named = {}
        for attack in attacks:
            base = attack.name or type(attack).__name__
            name, suffix = base, 2
            while name in named:
                name, suffix = f"{base}-{suffix}", suffix + 1
            named[name] = attack
    if not named:
        raise ValueError("robust_accuracy needs at least one attack")
    return named


def _batches(
    data: Batches | tuple[torch.Tensor, torch.Tensor], batch_size: int
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
    else:
        yield from data
