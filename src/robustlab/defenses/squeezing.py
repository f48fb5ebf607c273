"""Feature squeezing (Xu et al. 2018): flag an input whose prediction moves when it is squeezed.

A clean image's prediction barely changes under bit-depth reduction or median smoothing,
while an adversarial one often sits so close to a decision boundary that squeezing pushes it
back. The score is the largest L1 distance between the softmax on the input and the softmax
on a squeezed copy; the threshold is set on clean held-out images for a requested false-positive
rate, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from robustlab.defenses.base import Detector, FitData, check_image_input
from robustlab.defenses.registry import DEFENSES
from robustlab.defenses.transforms import bit_depth, integer_option, median_filter, positive_option
from robustlab.modes import eval_mode

Shape = tuple[int, int, int]


class FeatureSqueezing(Detector):
    """Two squeezers, a ``bits``-bit depth reduction and a ``median_size`` median filter; the
    paper's MNIST setting (1 bit, 2×2) is the default, for CIFAR-10 it used 5 bits and 2×2.

    The median filter is differentiable, so the score is differentiable through it and the
    classifier. Bit-depth reduction has a zero gradient, which would hide that squeezer from a
    joint adaptive attack; an adaptive attack therefore sets ``straight_through = True``, which
    takes the squeezer's gradient as identity (BPDA, Athalye et al. 2018) while keeping its
    forward value. The default (False) is the honest score: the value is the same either way.
    """

    def __init__(
        self,
        bits: int = 1,
        median_size: int = 2,
        false_positive_rate: float = 0.05,
        *,
        straight_through: bool = False,
    ) -> None:
        super().__init__(false_positive_rate)
        self.bits = bits
        self.median_size = median_size
        self.straight_through = straight_through

    def squeezed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input under each squeezer, bit depth first."""
        reduced = bit_depth(x, self.bits)
        if self.straight_through:
            reduced = x + (reduced - x).detach()
        return [reduced, median_filter(x, self.median_size)]

    def score(self, x: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
        squeezed = self.squeezed(x)
        outputs = classifier(torch.cat([x, *squeezed])).softmax(dim=1)
        original, *others = outputs.split(x.shape[0])
        distances = [(original - other).abs().sum(dim=1) for other in others]
        return torch.stack(distances).amax(dim=0)

    def fit(self, classifier: nn.Module, data: FitData) -> None:
        """Sets the threshold with the classifier in eval mode: dropout or batch statistics
        would otherwise make clean scores noisier than at inference."""
        with eval_mode(classifier):
            super().fit(classifier, data)

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, median_size={self.median_size}, "
            f"false_positive_rate={self.false_positive_rate}, "
            f"straight_through={self.straight_through}"
        )


def build_feature_squeezing(
    input_shape: Shape,
    num_classes: int,
    *,
    bits: int = 1,
    median_size: int = 2,
    false_positive_rate: float = 0.05,
) -> FeatureSqueezing:
    check_image_input("feature-squeezing", input_shape, min_size=2)
    note = f" (the image size for input shape {tuple(input_shape)})"
    return FeatureSqueezing(
        bits=integer_option("bits", bits, 1, 8),
        median_size=integer_option(
            "median_size", median_size, 2, min(input_shape[1:]), context=note
        ),
        false_positive_rate=positive_option("false_positive_rate", false_positive_rate),
    )


DEFENSES.add(
    "feature-squeezing",
    build_feature_squeezing,
    description="detector: softmax L1 change under bit depth and median squeezing (Xu et al. 2018)",
)
