"""Attacks named in configs: ``{name: pgd, eps: 8/255, steps: 10}``.

An attack is its registry name plus its parameters; it is validated by building it, so a
misspelt parameter or a bad value fails at load time naming the field. An attack that does
not state ``eps`` (or ``norm``) inherits the experiment's threat (``robustlab.config.threat``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from robustlab.config.base import fraction
from robustlab.config.threat import Threat
from robustlab.errors import ConfigError

if TYPE_CHECKING:
    from robustlab.attacks.base import Attack

INHERITED = ("eps", "norm")
"""Attack parameters the experiment's threat supplies when an attack leaves them out."""


class AttackConfig(BaseModel):
    """A registered attack and its parameters: ``{name: pgd, eps: 0.3, steps: 40}``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(description="attack registry name (see docs/attacks.md)")
    images: int | None = Field(
        default=None,
        ge=1,
        description="in evaluations: attack only the first N of the evaluated images (for "
        "costly attacks); not an attack parameter",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand_and_fractions(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict):
            return {key: value if key == "name" else fraction(value) for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _buildable(self) -> AttackConfig:
        try:
            self.build()
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return self

    @property
    def params(self) -> dict[str, Any]:
        """The attack's parameters (every key but ``name`` and ``images``)."""
        return dict(self.model_extra or {})

    def build(self, **overrides: Any) -> Attack:
        from robustlab.attacks.registry import build_attack  # attacks import no config

        return build_attack(self.name, **{**self.params, **overrides})

    def inherits(self, parameter: str) -> bool:
        """Whether the threat supplies ``parameter``: the attack has it and does not state it."""
        from robustlab.attacks.registry import attack_parameters

        return parameter not in self.params and parameter in attack_parameters(self.name)

    def with_threat(self, threat: Threat) -> AttackConfig:
        """This attack with the threat's ε and norm wherever it does not state its own."""
        given = {"eps": threat.eps, "norm": threat.norm}
        filled = {
            key: value for key, value in given.items() if value is not None and self.inherits(key)
        }
        if not filled:
            return self
        data = {"name": self.name, **self.params, **filled}
        if self.images is not None:
            data["images"] = self.images
        return AttackConfig.model_validate(data)


def pgd_config(**params: Any) -> AttackConfig:
    return AttackConfig.model_validate({"name": "pgd", **params})
