"""Adversarial attacks: frozen values called with a model and a batch of pixels in [0, 1].

``x_adv = PGD(eps=0.3, alpha=0.01, steps=40)(model, x, y)``; pass ``target=`` for targeted.
``attack.run(model, x, y)`` returns an ``AttackOutcome``: the batch and the attack's extras.
Every module of this package is imported here, so each ``@register_attack`` runs and
``build_attack("name", ...)`` knows every attack.
"""

import importlib
import pkgutil

from robustlab.attacks.base import Attack, AttackContext, AttackOutcome, fooled
from robustlab.attacks.fgsm import FGSM
from robustlab.attacks.iterative import BIM, ILCM, PGD
from robustlab.attacks.registry import ATTACKS, attack_parameters, build_attack
from robustlab.attacks.upset import UPSET

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ATTACKS",
    "BIM",
    "FGSM",
    "ILCM",
    "PGD",
    "UPSET",
    "Attack",
    "AttackContext",
    "AttackOutcome",
    "attack_parameters",
    "build_attack",
    "fooled",
]
