"""MagNet (Meng & Chen 2017, "MagNet: a two-pronged defense against adversarial examples").

An autoencoder trained on clean images learns the data manifold. Its two prongs:

* the **reformer** replaces an input by its reconstruction, pulling a slightly-off-manifold
  adversarial example back towards clean images before the classifier sees it;
* **detectors** reject inputs far from the manifold: by reconstruction error
  ``mean |x − AE(x)|^p`` (``l1``, ``l2``; the paper's MNIST detectors), or by how much
  reconstruction changes the classifier's softened output, the Jensen–Shannon divergence
  between ``softmax(f(x)/T)`` and ``softmax(f(AE(x))/T)`` (``jsd``; used on CIFAR).

Here one autoencoder serves the reformer and every detector (the paper trained one per
detector); it is registered in the reformer only, so it appears once in a state dict. It is one
of the paper's MNIST autoencoders, ``channels`` filters per layer, all 3×3 "same" convolutions
with sigmoid activations::

    pool=True  (MNIST detector I and reformer):
        conv-σ → avg-pool 2×2 → conv-σ → conv-σ → upsample 2×2 → conv-σ → conv-σ (C out)
    pool=False (MNIST detector II; odd image sizes):
        conv-σ → conv-σ → conv-σ (C out)

The last sigmoid keeps reconstructions in [0, 1]. Training minimises MSE between
``AE(clip(x + noise·N(0, 1)))`` and ``x`` with Adam, the paper's noise regulariser (its
1e-9 L2 weight penalty is omitted). The paper ran Adam at its default rate for 100 epochs of
MNIST (some 23 000 steps); a stack of sigmoids at that rate sits for thousands of steps on the
mean image, so the default here is ten times the rate, which on 10 000 MNIST images reaches a
mean absolute reconstruction error of 0.03 in 20 epochs. A fit that ends no better than a
constant image is refused (``MIN_EXPLAINED``): it would reform every input into a blur the
classifier cannot read, and a detector on it measures nothing.

The first detector's ``fit`` trains the shared autoencoder; a ``trained`` buffer records it,
so a model reloaded from a state dict is not retrained. Each detector's threshold rejects
``false_positive_rate`` of clean held-out images on its own, as in the paper, so the combined
clean rejection rate can reach the sum over detectors.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.defenses.base import Detector, FitData, InputTransform, check_image_input
from robustlab.defenses.registry import DEFENSES, Defense
from robustlab.errors import ConfigError
from robustlab.models import options

DETECTOR_KINDS = ("l1", "l2", "jsd")
MIN_EXPLAINED = 0.5
"""Share of held-out images' variance around the training mean image that the fitted
autoencoder's reconstructions must explain."""


class MagNetAutoencoder(nn.Module):
    """The shared autoencoder; frozen except while ``fit`` trains it."""

    trained: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        *,
        channels: int = 3,
        pool: bool = True,
        epochs: int = 20,
        lr: float = 1e-2,
        batch_size: int = 256,
        noise: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.Sigmoid()]
        if pool:
            layers += [nn.AvgPool2d(2), nn.Conv2d(channels, channels, 3, padding=1), nn.Sigmoid()]
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.Sigmoid()]
            layers += [nn.Upsample(scale_factor=2, mode="nearest")]
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.Sigmoid()]
        else:
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.Sigmoid()]
        layers += [nn.Conv2d(channels, in_channels, 3, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.epochs, self.lr, self.batch_size, self.noise = epochs, lr, batch_size, noise
        self.register_buffer("trained", torch.tensor(False))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out

    @property
    def is_trained(self) -> bool:
        return bool(self.trained)

    def fit(self, data: FitData) -> None:
        """Train from fresh weights, seeded by ``data.seed``; no-op if already trained.

        All randomness (initial weights, shuffling, noise) comes from the seed, inside a forked
        global RNG so that fitting a defense does not shift the caller's random stream.
        Raises ``ConfigError`` when the result reconstructs held-out images hardly better than
        the mean image, naming the options to change.
        """
        if self.is_trained:
            return
        device = self.trained.device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.manual_seed(data.seed)
            self._train(data.train, torch.Generator().manual_seed(data.seed))
        explained = self.explained_variance(data.train, data.held_out)
        if explained < MIN_EXPLAINED:
            raise ConfigError(
                f"MagNet's autoencoder explains {explained:.0%} of held-out images' variance "
                f"around the mean image (at least {MIN_EXPLAINED:.0%} needed): it learned "
                f"little more than a constant image; train it longer (option 'epochs', now "
                f"{self.epochs}) or faster (option 'lr', now {self.lr:g})"
            )
        self.trained.fill_(True)

    @torch.no_grad()
    def explained_variance(self, train: torch.Tensor, held_out: torch.Tensor) -> float:
        """1 − (reconstruction MSE) / (MSE of the training mean image), on ``held_out``."""
        device = self.trained.device
        mean_image = train.mean(dim=0, keepdim=True).to(device)
        residual = constant = 0.0
        for chunk in torch.split(held_out, 500):
            chunk = chunk.to(device)
            residual += float((self(chunk) - chunk).square().sum())
            constant += float((mean_image - chunk).square().sum())
        return 1.0 - residual / constant if constant > 0 else 0.0

    def _train(self, images: torch.Tensor, generator: torch.Generator) -> None:
        for module in self.net:
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
        was_training = self.training
        self.train()
        self.requires_grad_(True)
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        device = self.trained.device
        try:
            for _ in range(self.epochs):
                order = torch.randperm(len(images), generator=generator)
                for batch in torch.split(order, self.batch_size):
                    clean = images[batch].to(device)
                    noisy = clean
                    if self.noise > 0:
                        jitter = torch.randn(clean.shape, generator=generator).to(device)
                        noisy = (clean + self.noise * jitter).clamp(0, 1)
                    loss = F.mse_loss(self(noisy), clean)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[no-untyped-call]
                    optimizer.step()
        finally:
            self.requires_grad_(False)
            self.train(was_training)


class Reformer(InputTransform):
    """MagNet's reformer: ``x ↦ AE(x)``, differentiable, deterministic."""

    def __init__(self, autoencoder: MagNetAutoencoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def fit(self, data: FitData) -> None:
        """Train the shared autoencoder if no detector has yet (a reformer-only MagNet)."""
        self.autoencoder.fit(data)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.autoencoder.is_trained:
            raise RuntimeError("MagNet's autoencoder must be fitted before the reformer is used")
        reformed: torch.Tensor = self.autoencoder(x)
        return reformed


class AutoencoderDetector(Detector):
    """A detector scoring with the reformer's autoencoder, which it trains if nobody has.

    It keeps a plain reference, not a submodule: the autoencoder is registered once, in the
    reformer, so a state dict holds its weights once (safetensors refuses one tensor saved
    under several names, and duplicates could disagree on load) and moving or reloading the
    defended model reaches it through the reformer.
    """

    autoencoder: MagNetAutoencoder

    def __init__(self, autoencoder: MagNetAutoencoder, false_positive_rate: float) -> None:
        super().__init__(false_positive_rate)
        object.__setattr__(self, "autoencoder", autoencoder)  # unregistered on purpose

    def fit(self, classifier: nn.Module, data: FitData) -> None:
        self.autoencoder.fit(data)
        self.set_threshold(classifier, data.held_out)


class ReconstructionDetector(AutoencoderDetector):
    """Score ``mean |x − AE(x)|^p`` per image: large off the manifold the AE was trained on."""

    def __init__(self, autoencoder: MagNetAutoencoder, p: int, false_positive_rate: float) -> None:
        super().__init__(autoencoder, false_positive_rate)
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        self.p = p

    def score(self, x: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
        reconstructed: torch.Tensor = self.autoencoder(x)
        error = (x - reconstructed).abs()
        if self.p == 2:
            error = error.square()
        return error.flatten(1).mean(dim=1)


class DivergenceDetector(AutoencoderDetector):
    """Score the Jensen–Shannon divergence between the classifier's temperature-softened
    outputs on ``x`` and on ``AE(x)``: catches examples whose reconstruction error is small
    but whose reconstruction the classifier labels differently (the paper's CIFAR detector)."""

    def __init__(
        self, autoencoder: MagNetAutoencoder, temperature: float, false_positive_rate: float
    ) -> None:
        super().__init__(autoencoder, false_positive_rate)
        self.temperature = temperature

    def score(self, x: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
        log_p = F.log_softmax(classifier(x) / self.temperature, dim=1)
        reconstructed: torch.Tensor = self.autoencoder(x)
        log_q = F.log_softmax(classifier(reconstructed) / self.temperature, dim=1)
        log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
        kl_p = (log_p.exp() * (log_p - log_m)).sum(dim=1)
        kl_q = (log_q.exp() * (log_q - log_m)).sum(dim=1)
        return 0.5 * (kl_p + kl_q)


def _positive(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"option {name!r} must be a number > 0, got {value!r}")
    return float(value)


def _detector_kinds(value: object) -> tuple[str, ...]:
    expected = f"a non-empty list of distinct detectors from {', '.join(DETECTOR_KINDS)}"
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not value
        or any(kind not in DETECTOR_KINDS for kind in value)
        or len(set(value)) != len(value)
    ):
        raise ConfigError(f"option 'detectors' must be {expected}, got {value!r}")
    return tuple(value)


def magnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    channels: int = 3,
    pool: bool = True,
    epochs: int = 20,
    lr: float = 1e-2,
    batch_size: int = 256,
    noise: float = 0.1,
    detectors: Sequence[str] = ("l1", "l2"),
    temperature: float = 10.0,
    false_positive_rate: float = 0.01,
) -> Defense:
    """The reformer and the listed detectors, all sharing one autoencoder.

    Defaults follow the paper's MNIST setup (3 filters, noise 0.1, batch 256, Adam) except
    ``epochs`` (paper: 100), ``lr`` (paper: Adam's default 1e-3; see the module docstring) and
    ``false_positive_rate``: the paper's 0.001 needs thousands of
    held-out images for its quantile to be more than the single largest score, whereas 0.01
    is estimated stably from a few hundred.
    """
    channels = options.integer("channels", channels, minimum=1)
    pool = options.boolean("pool", pool)
    epochs = options.integer("epochs", epochs, minimum=1)
    lr = _positive("lr", lr)
    batch_size = options.integer("batch_size", batch_size, minimum=1)
    noise = options.number("noise", noise, minimum=0.0)
    kinds = _detector_kinds(detectors)
    temperature = _positive("temperature", temperature)
    rate = _positive("false_positive_rate", false_positive_rate)
    if rate >= 1:
        raise ConfigError(f"option 'false_positive_rate' must be in (0, 1), got {rate!r}")
    check_image_input("magnet", input_shape, min_size=2 if pool else 1)
    in_channels, height, width = input_shape
    if pool and (height % 2 or width % 2):
        raise ConfigError(
            f"option 'pool' (2×2 average pool, then 2×2 upsampling) needs an even height and "
            f"width, got {height}×{width}; set pool: false for odd sizes"
        )
    autoencoder = MagNetAutoencoder(
        in_channels,
        channels=channels,
        pool=pool,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        noise=noise,
    )
    parts: list[Detector] = []
    for kind in kinds:
        if kind == "jsd":
            parts.append(DivergenceDetector(autoencoder, temperature, rate))
        else:
            parts.append(ReconstructionDetector(autoencoder, 1 if kind == "l1" else 2, rate))
    return Defense(transforms=[Reformer(autoencoder)], detectors=parts)


DEFENSES.add(
    "magnet",
    magnet,
    description="autoencoder reformer plus reconstruction-error / JSD detectors "
    "(MagNet, Meng & Chen 2017)",
)
