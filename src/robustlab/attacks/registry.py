"""Attacks by name, for configs and the CLI: ``build_attack("pgd", eps=0.3, steps=100)``."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from robustlab.attacks.base import Attack
from robustlab.errors import ConfigError
from robustlab.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack")
"""Filled by the ``@register_attack`` decorators as ``robustlab.attacks`` imports each module."""

AttackType = TypeVar("AttackType", bound=type[Attack])


def register_attack(cls: AttackType) -> AttackType:
    """Class decorator: register under ``cls.name`` with the docstring's first line."""
    summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    ATTACKS.add(cls.name, cls, description=summary)
    return cls


def attack_parameters(name: str) -> dict[str, Any]:
    """Field names and defaults of a registered attack."""
    cls = ATTACKS.get(name)
    return {
        field.name: field.default
        for field in dataclasses.fields(cls)
        if field.default is not dataclasses.MISSING
    }


def build_attack(name: str, **params: Any) -> Attack:
    """Build by name; an unknown or invalid parameter is a ConfigError naming it."""
    cls = ATTACKS.get(name)
    known = attack_parameters(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"attack {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"parameters: {', '.join(known)}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"attack {name!r}: {error}") from None
