"""Short names for attacks in metrics, tables and file names: ``pgd-linf-eps0.3-steps50``."""

from __future__ import annotations

import re
from collections.abc import Sequence

from robustlab.attacks.base import Attack


def attack_key(attack: Attack) -> str:
    """Attack, norm, budget, steps and restarts: what a reader needs to judge a number."""
    described = attack.describe()
    parts = [str(described["attack"]), str(described["threat"])]
    for key in ("eps", "steps", "restarts"):
        value = described.get(key)
        if value is not None and not (key == "restarts" and value == 1):
            parts.append(f"{key}{value:.4g}")
    if described.get("precision") not in (None, "fp32"):
        parts.append(str(described["precision"]))
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts))


def unique_keys(attacks: Sequence[Attack]) -> dict[str, Attack]:
    """``attack_key`` for each attack; repeated keys get -2, -3, ... in order."""
    named: dict[str, Attack] = {}
    for attack in attacks:
        base = attack_key(attack)
        key, suffix = base, 2
        while key in named:
            key, suffix = f"{base}-{suffix}", suffix + 1
        named[key] = attack
    return named
