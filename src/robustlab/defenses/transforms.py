"""Input-transform defenses that squeeze or re-render the image before the classifier sees it.

Each one removes detail an attacker might hide a perturbation in (fine intensity steps, isolated
pixels, high-frequency texture, exact pixel positions); none is robust against an adaptive
attack that knows it is there (Athalye et al. 2018), which is why each declares whether its
gradient is usable (``differentiable``) and whether it is random (``randomized``).
"""

from __future__ import annotations

import math
import numbers
from typing import ClassVar

import torch
import torch.nn.functional as F

from robustlab.defenses.base import InputTransform, check_image_input
from robustlab.defenses.registry import DEFENSES
from robustlab.errors import ConfigError

Shape = tuple[int, int, int]


def integer_option(name: str, value: object, low: int, high: int, *, context: str = "") -> int:
    """An integer in [low, high]; ``context`` says where the bounds come from (input shape)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not low <= int(value) <= high
    ):
        raise ConfigError(
            f"option {name!r} must be an integer in [{low}, {high}]{context}, got {value!r}"
        )
    return int(value)


def positive_option(name: str, value: object) -> float:
    """A finite number > 0 (a weight or a step: zero would make the defense a no-op)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"option {name!r} must be a finite number > 0, got {value!r}")
    return float(value)


def bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Round [0, 1] pixels to 2**bits evenly spaced levels (0 and 1 included)."""
    levels = (1 << bits) - 1
    return torch.round(x.clamp(0, 1) * levels) / levels


def symmetric_pad(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Pad height and width by mirroring with the edge pixel repeated (d c b a | a b c d),
    scipy.ndimage's 'reflect' mode; ``before`` and ``after`` must not exceed the image size."""
    for dim in (-1, -2):
        length = x.shape[dim]
        parts = [
            x.narrow(dim, 0, before).flip(dim),
            x,
            x.narrow(dim, length - after, after).flip(dim),
        ]
        x = torch.cat(parts, dim=dim)
    return x


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """A size×size median per channel, exactly scipy.ndimage.median_filter(mode='reflect'),
    which Xu et al. used, so the paper's squeezers are reproduced.

    Even sizes (the paper's 2×2) have no centre pixel: as in scipy the window reaches one
    pixel further up/left than down/right, and of the two middle values the upper one is
    taken. The gradient flows to the selected pixel only, which is a median's useful gradient.
    """
    padded = symmetric_pad(x, size // 2, (size - 1) // 2)
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)
    flat = windows.reshape(*x.shape, size * size)
    return flat.kthvalue(size * size // 2 + 1, dim=-1).values


class BitDepth(InputTransform):
    """Bit-depth reduction (Xu et al. 2018, feature squeezing): fewer intensity levels leave
    less room for a small perturbation. Its gradient is zero almost everywhere."""

    differentiable: ClassVar[bool] = False

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bit_depth(x, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class MedianFilter(InputTransform):
    """Median smoothing (Xu et al. 2018): removes isolated pixel changes such as L0 attacks'
    while keeping edges, which a mean filter would blur."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return median_filter(x, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def _differences(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along width and height, zero past the last column/row."""
    dx = F.pad(z[..., :, 1:] - z[..., :, :-1], (0, 1))
    dy = F.pad(z[..., 1:, :] - z[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def smooth_total_variation(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Isotropic TV per channel, sqrt(dx² + dy² + ε²) summed over pixels, per image: smoothed
    so it has a gradient where the image is flat."""
    dx, dy = _differences(z)
    return torch.sqrt(dx**2 + dy**2 + epsilon**2).sum(dim=(1, 2, 3))


def smooth_total_variation_gradient(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The gradient of ``smooth_total_variation`` in closed form, so the optimiser runs without
    autograd (under ``torch.no_grad`` or ``inference_mode`` too)."""
    dx, dy = _differences(z)
    magnitude = torch.sqrt(dx**2 + dy**2 + epsilon**2)
    px, py = dx / magnitude, dy / magnitude
    from_left = F.pad(px[..., :, :-1], (1, 0))
    from_above = F.pad(py[..., :-1, :], (0, 0, 1, 0))
    return from_left + from_above - px - py


class TotalVariation(InputTransform):
    """Total-variation minimisation (Guo et al. 2018), simplified: no random pixel dropout.

    Projected gradient descent from z = x on ½‖z − x‖² + weight·TV_ε(z), clamped to [0, 1]
    after every step, for a fixed number of steps: piecewise-flat regions survive and small
    texture (where a perturbation hides) is flattened. The step is 1/L for the objective's
    gradient Lipschitz bound L = 1 + 8·weight/ε, so every step descends.

    ``differentiable`` is False: the output is the end of an unrolled optimiser, whose
    gradient through all steps is expensive and badly conditioned (ε is small), so attacks
    treat it as identity (BPDA), the known adaptive attack on it (Athalye et al. 2018).
    """

    differentiable: ClassVar[bool] = False

    def __init__(self, weight: float, steps: int, epsilon: float = 0.01) -> None:
        super().__init__()
        self.weight = weight
        self.steps = steps
        self.epsilon = epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        target = x.detach()
        step = 1.0 / (1.0 + 8.0 * self.weight / self.epsilon)
        z = target
        for _ in range(self.steps):
            gradient = (z - target) + self.weight * smooth_total_variation_gradient(z, self.epsilon)
            z = (z - step * gradient).clamp(0, 1)
        return z.detach()

    def extra_repr(self) -> str:
        return f"weight={self.weight}, steps={self.steps}, epsilon={self.epsilon}"


class RandomResizePad(InputTransform):
    """Random resizing and padding (Xie et al. 2018): the attacker cannot know the exact pixel
    grid the classifier will see, so a perturbation tuned to one grid is partly undone.

    The image is resized to s × s, s uniform in [max(H, W), max_size], placed at a uniformly
    random offset on a zero max_size × max_size canvas, and resized back to H × W (bilinear):
    the classifier was built for the input shape, so the defense must return it. As in Xie et
    al.'s implementation, one s and offset are drawn per call (per batch), from torch's global
    RNG so the caller's seed makes it reproducible.
    """

    randomized: ClassVar[bool] = True

    def __init__(self, max_size: int, interpolation: str = "nearest") -> None:
        super().__init__()
        self.max_size = max_size
        self.interpolation = interpolation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        low = max(height, width)
        size = int(torch.randint(low, self.max_size + 1, ()))
        room = self.max_size - size
        left = int(torch.randint(0, room + 1, ()))
        top = int(torch.randint(0, room + 1, ()))
        resized = resize(x, (size, size), self.interpolation)
        padded = F.pad(resized, (left, room - left, top, room - top))
        return resize(padded, (height, width), "bilinear").clamp(0, 1)

    def extra_repr(self) -> str:
        return f"max_size={self.max_size}, interpolation={self.interpolation!r}"


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def shape_note(input_shape: Shape) -> str:
    return f" for input shape {tuple(input_shape)}"


def build_bit_depth(input_shape: Shape, num_classes: int, *, bits: int = 5) -> BitDepth:
    """5 bits is Xu et al.'s CIFAR-10 setting: it keeps clean accuracy on every dataset here,
    where MNIST's 1 bit would wreck colour images."""
    check_image_input("bit-depth", input_shape)
    return BitDepth(integer_option("bits", bits, 1, 8))


def build_median(input_shape: Shape, num_classes: int, *, size: int = 2) -> MedianFilter:
    check_image_input("median", input_shape, min_size=2)
    image = min(input_shape[1:])
    note = f" (the image size{shape_note(input_shape)})"
    return MedianFilter(integer_option("size", size, 2, image, context=note))


def build_total_variation(
    input_shape: Shape,
    num_classes: int,
    *,
    weight: float = 0.03,
    steps: int = 50,
    epsilon: float = 0.01,
) -> TotalVariation:
    check_image_input("total-variation", input_shape, min_size=2)
    return TotalVariation(
        weight=positive_option("weight", weight),
        steps=integer_option("steps", steps, 1, 10_000),
        epsilon=positive_option("epsilon", epsilon),
    )


def build_random_resize_pad(
    input_shape: Shape,
    num_classes: int,
    *,
    max_size: int | None = None,
    interpolation: str = "nearest",
) -> RandomResizePad:
    """``max_size`` defaults to the image size × 331/299, Xie et al.'s ImageNet ratio; it must
    exceed the image size, or there is no randomness left."""
    check_image_input("random-resize-pad", input_shape)
    image = max(input_shape[1:])
    if max_size is None:
        max_size = max(round(image * 331 / 299), image + 1)
    note = f" (larger than the image size{shape_note(input_shape)}, at most 4× it)"
    max_size = integer_option("max_size", max_size, image + 1, 4 * image, context=note)
    if interpolation not in ("nearest", "bilinear"):
        raise ConfigError(
            f"option 'interpolation' must be 'nearest' or 'bilinear', got {interpolation!r}"
        )
    return RandomResizePad(max_size, interpolation)


DEFENSES.add(
    "bit-depth",
    build_bit_depth,
    description="round pixels to 2^bits levels (Xu et al. 2018, feature squeezing)",
)
DEFENSES.add(
    "median",
    build_median,
    description="size×size median filter, reflect padding (Xu et al. 2018, feature squeezing)",
)
DEFENSES.add(
    "total-variation",
    build_total_variation,
    description="total-variation minimisation, no pixel dropout (Guo et al. 2018)",
)
DEFENSES.add(
    "random-resize-pad",
    build_random_resize_pad,
    description="random resize then random zero padding, resized back (Xie et al. 2018)",
)
