"""Logit-noise masking (Nguyen & Sinha 2017, "A learning and masking approach to secure
learning").

Gaussian noise is added to the classifier's logits on every call at inference. Where the
true class wins by a wide margin the noise rarely changes the prediction, but everything an
attacker reads from the model is perturbed: the softmax loss and its input gradient, the
logit differences that margin attacks (Carlini–Wagner) climb and stop on, and the
finite-difference estimates of score-based black-box attacks. The gradients are masked, not
removed, so an attack that averages over the noise (EOT) sees through it; the defense exists
here to show that.
"""

from __future__ import annotations

import torch

from robustlab.defenses.base import LogitTransform
from robustlab.defenses.registry import DEFENSES
from robustlab.models import options


class LogitNoise(LogitTransform):
    """``logits + scale·σ·N(0, 1)``, fresh noise per call from torch's global RNG.

    ``σ`` is 1, or with ``relative`` the example's own spread of logits (their standard
    deviation over classes), so one ``scale`` masks models whose logits differ in magnitude
    (a normally trained network's logits grow with training, an adversarially trained one's
    stay small). The noise is drawn in training mode too: an attacker cannot switch it off.
    """

    randomized = True

    def __init__(self, scale: float, relative: bool = False) -> None:
        super().__init__()
        self.scale = scale
        self.relative = relative

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        noise = self.scale * torch.randn_like(logits)
        if self.relative:
            noise = noise * logits.std(dim=1, keepdim=True, correction=0)
        return logits + noise

    def extra_repr(self) -> str:
        return f"scale={self.scale}, relative={self.relative}"


def logit_noise(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    scale: float = 0.25,
    relative: bool = True,
) -> LogitNoise:
    """Gaussian logit noise of std ``scale`` (times the logits' spread if ``relative``).

    The default, a quarter of each example's logit spread, costs a normally trained digits
    CNN about 1% clean accuracy while two calls' input gradients of the loss already differ
    (median cosine 0.9 on clean test images, far less near the decision boundary where the
    noise exceeds the margin); 0.5 costs about 8%.
    """
    scale = options.number("scale", scale, minimum=0.0)
    relative = options.boolean("relative", relative)
    return LogitNoise(scale, relative)


DEFENSES.add(
    "logit-noise",
    logit_noise,
    description="Gaussian noise on the logits at inference, masking gradients "
    "(Nguyen & Sinha 2017)",
)
