"""The ``report:`` options of the plasticity-map kind: which fields are depth and width, which
phases are before and after, how robust fit and the compression and distillation probes are
measured."""

from __future__ import annotations

from pydantic import Field, field_validator

from robustlab.config import AttackConfig, StrictModel
from robustlab.experiments.kinds.base import Published


def _fast_autoattack() -> AttackConfig:
    return AttackConfig.model_validate({"name": "autoattack", "version": "fast"})


class CompressionOptions(StrictModel):
    """Compression as a capacity probe (thesis Ch. 5.2): each adversarially trained model is
    pruned and quantised, and its robustness measured again, so that the loss can be set
    against depth and width."""

    sparsities: list[float] = Field(
        default_factory=lambda: [0.5, 0.8, 0.9],
        description="shares of conv and linear weights set to zero (global magnitude pruning)",
    )
    fine_tune_steps: int = Field(
        default=200, ge=0, description="adversarial-training steps after pruning, masks kept"
    )
    fine_tune_lr: float = Field(default=1e-4, gt=0, description="Adam's step for fine-tuning")
    batch_size: int = Field(default=128, ge=1)
    bits: list[int] = Field(
        default_factory=lambda: [8, 4, 2],
        description="weight bit widths of fake quantisation (symmetric, per output channel)",
    )
    attack: AttackConfig = Field(
        default_factory=_fast_autoattack,
        description="robust accuracy of every compressed model and of the model itself",
    )
    images: int = Field(default=500, ge=1, description="first N test images, attacked")

    @field_validator("sparsities")
    @classmethod
    def _sparsity_range(cls, values: list[float]) -> list[float]:
        for index, value in enumerate(values):
            if not 0 <= value < 1:
                raise ValueError(
                    f"sparsities.{index}: {value!r} is outside [0, 1) (the share of weights "
                    "set to zero; 1 would remove every weight)"
                )
        return values

    @field_validator("bits")
    @classmethod
    def _bit_range(cls, values: list[int]) -> list[int]:
        for index, value in enumerate(values):
            if not 2 <= value <= 16:
                raise ValueError(f"bits.{index}: {value!r} is outside 2..16")
        return values


class DistillationOptions(StrictModel):
    """Distillation as a capacity probe (thesis Ch. 5.2): each adversarially trained model
    teaches a student of the same depth and a narrower width, trained from scratch by
    adversarial distillation; teacher and student are scored by the same attack."""

    width_factor: float = Field(
        default=0.5, gt=0, lt=1, description="the student's width over the teacher's"
    )
    steps: int = Field(default=1000, ge=1, description="Adam steps of the student's training")
    eps_warmup_steps: int = Field(
        default=0, ge=0, description="steps over which ε ramps up from 0 (as eps_warmup_epochs)"
    )
    lr: float = Field(default=1e-3, gt=0, description="Adam's step size")
    batch_size: int = Field(default=128, ge=1)
    temperature: float = Field(default=1.0, gt=0, description="softens both predictions")
    attack: AttackConfig = Field(
        default_factory=_fast_autoattack, description="robust accuracy of teacher and student"
    )
    images: int = Field(default=500, ge=1, description="first N test images, attacked")


class PlasticityMapOptions(StrictModel):
    title: str = ""
    notes: str = Field(default="", description="printed under the title, e.g. the protocol")
    depth: str = Field(default="model.options.depth", description="the sweep field that is depth")
    width: str = Field(default="model.options.width", description="the sweep field that is width")
    before_phase: str | None = Field(default=None, description="default: the first phase")
    after_phase: str | None = Field(default=None, description="default: the last phase")
    robust_attack: str = Field(
        default="autoattack",
        description="label (or its start) of the after-phase attack that gives robust accuracy",
    )
    fit_images: int = Field(
        default=2000,
        ge=1,
        description="first N training images: robust fit is accuracy on the training attack's "
        "examples of them",
    )
    batch_size: int = Field(default=500, ge=1)
    compression: CompressionOptions | None = None
    distillation: DistillationOptions | None = None
    published: list[Published] = Field(default_factory=list)
