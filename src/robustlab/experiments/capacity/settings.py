"""What a capacity search is allowed to spend, and what counts as fitting: recorded with
every result, so a capacity is always read together with the budget that produced it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from robustlab.config import AttackConfig, StrictModel


class CapacitySettings(StrictModel):
    """Memorisation capacity (Zhang et al. 2017): the largest number of training images whose
    labels, drawn at random, a freshly initialised model fits to ``threshold`` within the
    budget. ``robust``: the largest set of correctly labelled images whose ``attack`` examples
    it fits after adversarial training on them, within the same kind of budget."""

    measure: Literal["memorisation", "robust"] = "memorisation"
    epochs: int = Field(
        default=100,
        ge=1,
        description="the budget: passes over the set, each image seen this often at most",
    )
    min_steps: int | None = Field(
        default=None,
        ge=1,
        description="a floor on the budget in optimiser steps: a small set, a few batches per "
        "epoch, gets more epochs until it has this many steps (None: epochs alone)",
    )
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0, description="Adam's step")
    threshold: float = Field(
        default=0.99, gt=0, le=1, description="training accuracy that counts as fitted"
    )
    min_images: int = Field(default=100, ge=1, description="the search's smallest set")
    max_images: int = Field(default=10_000, ge=2, description="the search's largest set")
    resolution: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="stop when the bracket's ends are within this ratio (0.1: 10%)",
    )
    repeats: int = Field(
        default=3, ge=1, description="independent searches (labels and init), for the spread"
    )
    attack: AttackConfig | None = Field(
        default=None,
        description="robust: the attack fitted against (default PGD-10 at the threat's ε)",
    )

    @model_validator(mode="after")
    def _bracket(self) -> CapacitySettings:
        if self.min_images >= self.max_images:
            raise ValueError(
                f"min_images ({self.min_images}) must be below max_images ({self.max_images})"
            )
        if self.measure == "memorisation" and self.attack is not None:
            raise ValueError("attack: only the robust measure attacks (measure: robust)")
        return self
