"""Ways of taking gradients through a defense, which any gradient attack accepts unchanged.

An adaptive attack (Athalye et al. 2018; Tramèr et al. 2020) attacks a *view* of the defended
model: the same weights and the same deployed forward values, with gradients an attacker can
use. ``gradient_view(model, Gradients(...))`` returns that view as an ``nn.Module``, so PGD,
APGD, CW or any other attack takes it like any model:

* ``bpda``: Backward Pass Differentiable Approximation. A non-differentiable transform t is
  applied in the forward pass and treated as the identity in the backward pass,
  ``x + (t(x) − x).detach()``; the forward value is exactly the deployed one.
* ``eot``: Expectation over Transformation. The logits are averaged over ``eot`` independent
  draws of the defense's randomness, so the gradient is that of the expected logits. Over a
  deterministic defense it is exactly the plain gradient.
* ``joint``: a detector-defended model gets one more output, a "rejected" logit that exceeds
  every class logit exactly when a detector would refuse the input (Carlini & Wagner 2017).
  A targeted attack toward a real class on this view must fool the classifier *and* pass the
  detectors; ``robustlab.evaluate.defended`` runs it toward the runner-up classes.

Asking for a way that makes no sense for the defense (BPDA with nothing non-differentiable,
``joint`` without a detector) is an error naming the option: it would silently weaken or
mislabel the evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from robustlab.defenses.defended import DefendedModel, _joined
from robustlab.errors import ConfigError


@dataclass(frozen=True)
class Gradients:
    """How an attack differentiates the defended model."""

    bpda: bool = False
    eot: int = 1
    joint: bool = False
    reject_margin: float = 10.0
    """Logit units by which the "rejected" output exceeds the best class per unit of the
    largest detector score over its threshold (``joint`` only)."""

    def __post_init__(self) -> None:
        if isinstance(self.eot, bool) or not isinstance(self.eot, int) or self.eot < 1:
            raise ConfigError(f"gradients.eot must be an integer >= 1 (draws), got {self.eot!r}")
        if not self.reject_margin > 0:
            raise ConfigError(f"gradients.reject_margin must be > 0, got {self.reject_margin!r}")

    @property
    def plain(self) -> bool:
        return not self.bpda and self.eot == 1 and not self.joint

    def describe(self) -> str:
        parts = ["BPDA"] * self.bpda + [f"EOT×{self.eot}"] * (self.eot > 1)
        parts += ["joint with detectors"] * self.joint
        return " + ".join(parts) or "plain gradients"


def check_gradients(model: nn.Module, gradients: Gradients) -> None:
    """Refuse gradient options the model's defense gives no reason for."""
    defended = model if isinstance(model, DefendedModel) else None
    if gradients.bpda and (defended is None or not _has_bpda_target(defended)):
        names = "none" if defended is None else ", ".join(defended.names) or "none"
        raise ConfigError(
            f"gradients.bpda: the defense ({names}) has no non-differentiable transform "
            "or squeezer, so BPDA would only replace true gradients by an approximation; "
            "drop bpda"
        )
    if gradients.joint and (defended is None or not defended.has_detectors):
        raise ConfigError(
            "gradients.joint: the model has no detector to attack jointly; drop joint"
        )


def gradient_view(model: nn.Module, gradients: Gradients) -> nn.Module:
    """The model to hand to an attack so that it differentiates as ``gradients`` says."""
    check_gradients(model, gradients)
    if gradients.plain:
        return model
    return GradientView(model, gradients)


class GradientView(nn.Module):
    """The defended model's forward values, with BPDA / EOT / joint-detector gradients."""

    def __init__(self, model: nn.Module, gradients: Gradients) -> None:
        super().__init__()
        self.model = model
        self.gradients = gradients

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        draws = [self._once(x) for _ in range(self.gradients.eot)]
        return draws[0] if len(draws) == 1 else torch.stack(draws).mean(dim=0)

    def _once(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model
        if not isinstance(model, DefendedModel):
            logits: torch.Tensor = model(x)
            return logits
        inputs = x
        for transform in model.transforms:
            if self.gradients.bpda and not getattr(transform, "differentiable", True):
                inputs = inputs + (transform(inputs) - inputs).detach()
            else:
                inputs = _joined(transform, inputs)
        logits = model.classifier(inputs)
        for logit_transform in model.logit_transforms:
            logits = logit_transform(logits)
        if not self.gradients.joint:
            return logits
        with _straight_through(model, self.gradients.bpda):
            over = model.detection_scores(x).amax(dim=1)
        rejected = logits.amax(dim=1) + self.gradients.reject_margin * over
        return torch.cat([logits, rejected[:, None].to(logits.dtype)], dim=1)


def _has_bpda_target(model: DefendedModel) -> bool:
    return bool(model.non_differentiable) or any(
        hasattr(detector, "straight_through") for detector in model.detector_list
    )


@contextmanager
def _straight_through(model: DefendedModel, enabled: bool) -> Iterator[None]:
    """Detectors that squeeze inputs (feature squeezing) pass gradients straight through
    their squeezers while BPDA is on; restored afterwards."""
    chosen = [d for d in model.detector_list if hasattr(d, "straight_through")]
    before = [bool(getattr(d, "straight_through")) for d in chosen]  # noqa: B009
    try:
        for detector in chosen:
            setattr(detector, "straight_through", enabled)  # noqa: B010
        yield
    finally:
        for detector, value in zip(chosen, before, strict=True):
            setattr(detector, "straight_through", value)  # noqa: B010
