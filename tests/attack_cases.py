"""Fast parameters for every registered attack, used by the registry-driven property tests.

A new attack gets a row here; ``test_every_registered_attack_has_a_case`` fails until it does,
so no registered attack escapes the property tests. Budgets are for the 8×8 digits model.
"""

from __future__ import annotations

from typing import Any

FAST_PARAMS: dict[str, dict[str, Any]] = {
    "fgsm": {"eps": 0.2},
    "bim": {"eps": 0.2, "steps": 5},
    "ilcm": {"eps": 0.3, "steps": 8},
    "pgd": {"eps": 0.2, "steps": 8},
}

L0_BUDGET_FIELD: dict[str, str] = {}
"""For L0 attacks: the parameter holding the number of pixels they may change."""
