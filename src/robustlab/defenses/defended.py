"""A trained classifier with its defenses around it: what is deployed and what is attacked.

``DefendedModel`` is an ordinary ``nn.Module`` returning logits, so every attack and evaluator
runs on it unchanged: input transforms in order, the classifier, then logit transforms. Its
detectors do not change the logits; ``rejects(x)`` says which inputs they refuse, and the
evaluation counts a refused adversarial example as the defense winning.

A transform whose gradient is undefined (a codec run outside torch) is joined to its input
with a zero gradient, which is what differentiating the deployed pipeline honestly gives: the
naive attack sees the masked gradient the defense's paper relied on, instead of an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.defenses.base import Detector, FitData, InputTransform
from robustlab.defenses.registry import Defense


class DefendedModel(nn.Module):
    """``logit_transforms(classifier(transforms(x)))``, with detectors on the side."""

    def __init__(self, classifier: nn.Module, parts: Sequence[Defense], names: Sequence[str]):
        super().__init__()
        self.classifier = classifier
        self.transforms = nn.ModuleList(t for part in parts for t in part.transforms)
        self.logit_transforms = nn.ModuleList(t for part in parts for t in part.logit_transforms)
        self.detectors = nn.ModuleList(d for part in parts for d in part.detectors)
        self.names = list(names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            x = _joined(transform, x)
        logits: torch.Tensor = self.classifier(x)
        for logit_transform in self.logit_transforms:
            logits = logit_transform(logits)
        return logits

    @property
    def detector_list(self) -> list[Detector]:
        return [detector for detector in self.detectors if isinstance(detector, Detector)]

    @property
    def transform_list(self) -> list[InputTransform]:
        return [t for t in self.transforms if isinstance(t, InputTransform)]

    @property
    def non_differentiable(self) -> list[str]:
        """Class names of the transforms an attack must pass with BPDA."""
        return [type(t).__name__ for t in self.transform_list if not t.differentiable]

    @property
    def randomized(self) -> bool:
        """Whether two calls on one input may answer differently (an attack needs EOT)."""
        parts: list[nn.Module] = [*self.transforms, *self.logit_transforms, *self.detectors]
        return any(getattr(part, "randomized", False) for part in parts)

    @property
    def has_detectors(self) -> bool:
        return len(self.detectors) > 0

    @property
    def fitted(self) -> bool:
        return all(detector.fitted for detector in self.detector_list)

    def fit(self, data: FitData) -> None:
        """Fit every detector (and what it trains, e.g. MagNet's autoencoder) on clean data."""
        for detector in self.detector_list:
            detector.fit(self.classifier, data)

    def rejects(self, x: torch.Tensor) -> torch.Tensor:
        """Per input: whether any detector refuses it (all False without detectors)."""
        refused = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for detector in self.detector_list:
            refused |= detector.rejects(x, self.classifier)
        return refused

    def detection_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(N, detectors): each detector's score minus its threshold, over its threshold's size
        (> 0 means rejected), so detectors on different scales can be combined."""
        columns = []
        for detector in self.detector_list:
            scale = detector.threshold.abs().clamp_min(1e-6)
            columns.append((detector.score(x, self.classifier) - detector.threshold) / scale)
        return torch.stack(columns, dim=1)


def _joined(transform: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = transform(x)
    if x.requires_grad and not out.requires_grad:
        out = out + 0.0 * x  # the true gradient of a piecewise-constant codec: zero
    return out
