"""The defense contract: the three kinds of component a defended model is built from.

A defense composes with any trained classifier, so every attack and evaluator runs on it
unchanged: ``DefendedModel`` (``robustlab.defenses.defended``) applies the input transforms in
order, then the classifier, then any logit noise, and asks its detectors whether to reject.

* ``InputTransform``: pixels in [0, 1] to pixels in [0, 1] of the same shape (JPEG, bit depth,
  median filter, total variation, random resize-and-pad, MagNet's reformer). It declares
  whether its gradient is useful (``differentiable``) and whether it draws randomness
  (``randomized``): an adaptive attack takes BPDA through the first kind's opposite and EOT
  over the second (``robustlab.defenses.gradients``).
* ``LogitTransform``: logits to logits at inference (logit-noise masking).
* ``Detector``: a score per input, higher meaning more suspicious, and a threshold set by
  ``fit`` from clean images so that a requested share of them is rejected.

Components are built by name from the ``DEFENSES`` registry (``robustlab.defenses.registry``)
with the dataset's input shape, so a component that does not fit (channels, image size) is
refused when the model is built, naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from robustlab.errors import ConfigError


class InputTransform(nn.Module):
    """A pre-processing defense: (N, C, H, W) pixels in [0, 1] to the same shape and range."""

    differentiable: ClassVar[bool] = True
    """Its gradient carries information; False for quantising or codec steps whose gradient
    is zero or undefined almost everywhere (an attack must go through them with BPDA)."""
    randomized: ClassVar[bool] = False
    """It draws randomness on every call (an attack must average over it: EOT)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LogitTransform(nn.Module):
    """A defense applied to the classifier's logits at inference."""

    randomized: ClassVar[bool] = False

    def forward(self, logits: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class FitData:
    """Clean images a detector (or a trained transform such as MagNet's autoencoder) is fitted
    on: ``train`` to learn from, ``held_out`` (not in ``train``) to set thresholds on."""

    train: torch.Tensor
    held_out: torch.Tensor
    seed: int = 0


class Detector(nn.Module):
    """Flags inputs as adversarial: ``score(x, classifier) > threshold`` means reject.

    ``score`` must be differentiable wherever its pieces are (a joint attack ascends the
    classifier's loss while descending the score); ``fit`` learns whatever the detector needs
    and sets ``threshold`` so that a share ``false_positive_rate`` of ``data.held_out`` is
    rejected.
    """

    randomized: ClassVar[bool] = False
    threshold: torch.Tensor

    def __init__(self, false_positive_rate: float) -> None:
        super().__init__()
        if not 0 < false_positive_rate < 1:
            raise ConfigError(
                f"false_positive_rate must be in (0, 1) (a share of clean images rejected), "
                f"got {false_positive_rate!r}"
            )
        self.false_positive_rate = false_positive_rate
        self.register_buffer("threshold", torch.tensor(float("nan")))

    @property
    def fitted(self) -> bool:
        return bool(torch.isfinite(self.threshold))

    def score(self, x: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def fit(self, classifier: nn.Module, data: FitData) -> None:
        """Learn (if anything) and set the threshold; the default only sets the threshold."""
        self.set_threshold(classifier, data.held_out)

    def set_threshold(self, classifier: nn.Module, held_out: torch.Tensor) -> None:
        """The threshold that rejects ``false_positive_rate`` of ``held_out``: the score's
        (1 − rate) quantile, so a score strictly above it is rejected."""
        with torch.no_grad():
            chunks = torch.split(held_out, 500)
            scores = torch.cat([self.score(chunk, classifier) for chunk in chunks]).float()
        self.threshold.fill_(float(torch.quantile(scores, 1 - self.false_positive_rate)))

    def rejects(self, x: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} must be fitted before it rejects inputs")
        return self.score(x, classifier) > self.threshold


def check_image_input(owner: str, input_shape: tuple[int, int, int], *, min_size: int = 1) -> None:
    """Refuse an input shape that is not (C, H, W) images of at least ``min_size`` pixels."""
    if len(input_shape) != 3 or min(input_shape[1:]) < min_size:
        raise ConfigError(
            f"defense {owner!r} needs image inputs (channels, height, width) of at least "
            f"{min_size}×{min_size} pixels, got input shape {tuple(input_shape)}"
        )
