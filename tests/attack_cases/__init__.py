"""Fast parameters for every registered attack, used by the registry-driven property tests.

Each module here holds ``FAST_PARAMS`` (attack name -> parameters that run in about a second
on the 8×8 digits model) and optionally ``L0_BUDGET_FIELD`` (for L0 attacks: the parameter
holding how many pixels they may change). They are merged below. A registered attack with no
row makes ``test_every_registered_attack_has_a_case`` fail, so none escapes the properties.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

FAST_PARAMS: dict[str, dict[str, Any]] = {}
L0_BUDGET_FIELD: dict[str, str] = {}

for _module_info in pkgutil.iter_modules(__path__):
    _module = importlib.import_module(f"{__name__}.{_module_info.name}")
    for _name, _params in getattr(_module, "FAST_PARAMS", {}).items():
        if _name in FAST_PARAMS:
            raise ValueError(f"attack case {_name!r} is defined twice")
        FAST_PARAMS[_name] = _params
    L0_BUDGET_FIELD.update(getattr(_module, "L0_BUDGET_FIELD", {}))
