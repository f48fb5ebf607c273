"""MagNet (reformer and detectors sharing one autoencoder) and logit-noise masking."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.data import load_split
from robustlab.defenses.base import FitData
from robustlab.defenses.magnet import (  # importing registers "magnet"
    DivergenceDetector,
    MagNetAutoencoder,
    ReconstructionDetector,
    Reformer,
)
from robustlab.defenses.noise import LogitNoise  # registers "logit-noise"
from robustlab.defenses.registry import DEFENSES, Defense, build_defense
from robustlab.errors import ConfigError

SHAPE = (1, 8, 8)
FAST = {"pool": False, "epochs": 3, "lr": 3e-2, "batch_size": 32}
RATE = 0.1


def _magnet(**options: Any) -> Defense:
    return build_defense("magnet", SHAPE, 10, **{**FAST, **options})


def _parts(defense: Defense) -> nn.ModuleList:
    return nn.ModuleList([*defense.transforms, *defense.detectors])


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny convolutions: extra threads only contend on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train images, held-out images for thresholds, and test images never fitted on."""
    train = load_split("digits", "train", None)
    test = load_split("digits", "test", None).images
    return train.images, test[:180], test[180:]


@pytest.fixture(scope="module")
def classifier(digits: tuple[torch.Tensor, ...]) -> nn.Module:
    """A linear digits classifier (about 95% accurate) for the divergence detector."""
    train = load_split("digits", "train", None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(model(train.images), train.labels).backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def fitted(digits: tuple[torch.Tensor, ...], classifier: nn.Module) -> Defense:
    train, held_out, _ = digits
    defense = _magnet(detectors=["l1", "l2", "jsd"], false_positive_rate=RATE)
    for detector in defense.detectors:
        detector.fit(classifier, FitData(train, held_out, seed=0))
    return defense


def test_builder_returns_a_reformer_and_detectors_sharing_one_autoencoder() -> None:
    defense = _magnet(detectors=["l2", "jsd"])
    (reformer,) = defense.transforms
    assert isinstance(reformer, Reformer) and reformer.differentiable and not reformer.randomized
    l2, jsd = defense.detectors
    assert isinstance(l2, ReconstructionDetector) and l2.p == 2
    assert isinstance(jsd, DivergenceDetector) and jsd.temperature == 10.0
    assert l2.autoencoder is reformer.autoencoder is jsd.autoencoder
    assert "Meng & Chen 2017" in DEFENSES.entry("magnet").description
    with pytest.raises(RuntimeError, match="fitted"):
        reformer(torch.rand(2, *SHAPE))


def test_thresholds_give_the_requested_clean_false_positive_rate(
    fitted: Defense, classifier: nn.Module, digits: tuple[torch.Tensor, ...]
) -> None:
    _, held_out, test = digits
    for detector in fitted.detectors:
        assert detector.fitted
        with torch.no_grad():
            on_held_out = detector.rejects(held_out, classifier).float().mean().item()
            on_test = detector.rejects(test, classifier).float().mean().item()
        # each detector is set for the full rate on its own (not a share of it)
        assert RATE - 1 / len(held_out) - 1e-6 <= on_held_out <= RATE + 1e-6
        assert 0.03 <= on_test <= 0.2, (type(detector).__name__, on_test)


def test_reformer_reconstructs_images_in_range(
    fitted: Defense, digits: tuple[torch.Tensor, ...]
) -> None:
    train, _, test = digits
    with torch.no_grad():
        reformed = fitted.transforms[0](test)
    assert reformed.shape == test.shape
    assert reformed.min() >= 0 and reformed.max() <= 1
    # it learned the images: better than answering the mean training image every time
    assert F.mse_loss(reformed, test) < F.mse_loss(train.mean(0).expand_as(test), test)


def test_reforming_keeps_clean_accuracy_close_to_the_bare_classifier(
    fitted: Defense, classifier: nn.Module, digits: tuple[torch.Tensor, ...]
) -> None:
    """A reformer the classifier cannot read would make MagNet look robust by being wrong
    about everything: clean accuracy on reformed images must stay within a few points."""
    _, _, test = digits
    labels = load_split("digits", "test", None).labels[180:]
    with torch.no_grad():
        bare = (classifier(test).argmax(1) == labels).float().mean()
        reformed = (classifier(fitted.transforms[0](test)).argmax(1) == labels).float().mean()
    assert bare > 0.9
    assert reformed >= bare - 0.05, (float(bare), float(reformed))


def test_an_autoencoder_no_better_than_the_mean_image_is_refused(
    digits: tuple[torch.Tensor, ...],
) -> None:
    train, held_out, _ = digits
    autoencoder = MagNetAutoencoder(1, pool=False, epochs=1, lr=1e-6, batch_size=64)
    with pytest.raises(ConfigError, match=r"option 'epochs', now 1\).*option 'lr', now 1e-06"):
        autoencoder.fit(FitData(train, held_out, seed=0))
    assert not autoencoder.is_trained
    good = MagNetAutoencoder(1, **FAST)
    good.fit(FitData(train, held_out, seed=0))
    assert good.is_trained and good.explained_variance(train, held_out) > 0.5


def test_noisy_images_reconstruct_worse_and_are_rejected_more(
    fitted: Defense, classifier: nn.Module, digits: tuple[torch.Tensor, ...]
) -> None:
    _, _, test = digits
    noisy = test + 0.3 * torch.randn(test.shape, generator=torch.Generator().manual_seed(1))
    noisy = noisy.clamp(0, 1)
    for detector in fitted.detectors[:2]:
        with torch.no_grad():
            assert (
                detector.score(noisy, classifier).mean()
                > 2 * detector.score(test, classifier).mean()
            )
            assert detector.rejects(noisy, classifier).float().mean() > 0.5


def test_scores_are_differentiable(fitted: Defense, classifier: nn.Module) -> None:
    x = torch.rand(4, *SHAPE, requires_grad=True)
    for detector in fitted.detectors:
        (gradient,) = torch.autograd.grad(detector.score(x, classifier).sum(), x)
        assert gradient.abs().sum() > 0


def test_fitted_state_round_trips_through_a_state_dict(
    fitted: Defense, classifier: nn.Module, digits: tuple[torch.Tensor, ...]
) -> None:
    train, held_out, test = digits
    # the shared autoencoder is stored once (under the reformer), so safetensors can save it
    state = safetensors.torch.load(safetensors.torch.save(_parts(fitted).state_dict()))
    assert [key for key in state if key.endswith("autoencoder.trained")] == [
        "0.autoencoder.trained"
    ]
    assert [key for key in state if key.startswith("1.")] == ["1.threshold"]
    fresh = _magnet(detectors=["l1", "l2", "jsd"], false_positive_rate=RATE)
    assert not any(detector.fitted for detector in fresh.detectors)
    _parts(fresh).load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh.transforms[0](test), fitted.transforms[0](test))
        for old, new in zip(fitted.detectors, fresh.detectors, strict=True):
            assert new.fitted and torch.equal(new.threshold, old.threshold)
            assert torch.equal(new.score(test, classifier), old.score(test, classifier))
    # reloaded means trained: fitting again only re-sets the threshold, it does not retrain
    before = [p.clone() for p in fresh.transforms[0].parameters()]
    fresh.detectors[0].fit(classifier, FitData(train[:64], held_out, seed=5))
    assert all(
        torch.equal(a, b) for a, b in zip(before, fresh.transforms[0].parameters(), strict=True)
    )
    assert torch.equal(fresh.detectors[0].threshold, fitted.detectors[0].threshold)


def test_the_autoencoder_is_trained_once_seeded_and_leaves_global_rng_alone(
    digits: tuple[torch.Tensor, ...],
) -> None:
    train, held_out, _ = digits
    data = FitData(train, held_out, seed=3)

    def fit_once(global_seed: int) -> tuple[Defense, list[torch.Tensor]]:
        defense = _magnet(epochs=2)
        torch.manual_seed(global_seed)
        expected = torch.rand(3)
        torch.manual_seed(global_seed)
        defense.detectors[0].fit(nn.Identity(), data)
        assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
        trained = [p.clone() for p in defense.transforms[0].parameters()]
        defense.detectors[1].fit(nn.Identity(), data)  # shares the trained autoencoder
        assert all(
            torch.equal(a, b)
            for a, b in zip(trained, defense.transforms[0].parameters(), strict=True)
        )
        return defense, trained

    first, weights = fit_once(123)
    _, again = fit_once(999)  # a different global state (and initial weights): the same fit
    assert all(torch.equal(a, b) for a, b in zip(weights, again, strict=True))
    assert not any(p.requires_grad for p in first.transforms[0].parameters())
    other = MagNetAutoencoder(1, pool=False, epochs=2, lr=3e-2, batch_size=32)
    other.fit(FitData(train, held_out, seed=4))
    assert not all(torch.equal(a, b) for a, b in zip(weights, other.parameters(), strict=True))


def test_pooling_autoencoder_keeps_the_shape() -> None:
    autoencoder = MagNetAutoencoder(3, channels=2, pool=True)
    assert autoencoder(torch.rand(2, 3, 6, 10)).shape == (2, 3, 6, 10)
    assert build_defense("magnet", (3, 7, 5), 10, pool=False).detectors


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"channels": 0}, "'channels'"),
        ({"epochs": 1.5}, "'epochs'"),
        ({"lr": 0}, "'lr'"),
        ({"batch_size": True}, "'batch_size'"),
        ({"noise": -0.1}, "'noise'"),
        ({"detectors": ["l3"]}, "'detectors'"),
        ({"detectors": []}, "'detectors'"),
        ({"detectors": "l1"}, "'detectors'"),
        ({"detectors": ["l1", "l1"]}, "'detectors'"),
        ({"temperature": 0}, "'temperature'"),
        ({"false_positive_rate": 1.0}, "'false_positive_rate'"),
        ({"false_positive_rate": 0}, "'false_positive_rate'"),
        ({"pool": "yes"}, "'pool'"),
        ({"colour": 1}, "'colour'"),
    ],
)
def test_bad_magnet_options_name_the_option(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        build_defense("magnet", SHAPE, 10, **options)


def test_magnet_refuses_inputs_it_cannot_pool() -> None:
    with pytest.raises(ConfigError, match="'pool'"):
        build_defense("magnet", (1, 7, 8), 10)
    with pytest.raises(ConfigError, match="image inputs"):
        build_defense("magnet", (64,), 10)  # type: ignore[arg-type]


# --- logit noise ---------------------------------------------------------------------------


def test_logit_noise_is_registered_and_randomized() -> None:
    defense = build_defense("logit-noise", SHAPE, 10)
    (noise,) = defense.logit_transforms
    assert isinstance(noise, LogitNoise) and noise.randomized
    assert (noise.scale, noise.relative) == (0.25, True)
    assert "Nguyen & Sinha 2017" in DEFENSES.entry("logit-noise").description


def test_logit_noise_draws_fresh_noise_but_keeps_wide_margins() -> None:
    (noise,) = build_defense("logit-noise", SHAPE, 10).logit_transforms
    logits = torch.randn(500, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(500) % 10
    logits[torch.arange(500), labels] += 8.0  # a confident model's margin
    first, second = noise(logits), noise(logits)
    assert not torch.equal(first, second)
    assert not torch.equal(first, logits)
    assert (first.argmax(1) == labels).float().mean() > 0.95
    torch.manual_seed(7)
    seeded = noise(logits)
    torch.manual_seed(7)
    assert torch.equal(noise(logits), seeded)


def test_logit_noise_scale_absolute_and_relative() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2000, 10)
    absolute = LogitNoise(2.0, relative=False)
    assert (absolute(logits) - logits).std().item() == pytest.approx(2.0, rel=0.05)
    relative = LogitNoise(0.5, relative=True)
    torch.manual_seed(1)
    small = relative(logits) - logits
    torch.manual_seed(1)
    large = relative(30 * logits) - 30 * logits
    torch.testing.assert_close(large, 30 * small)  # same masking whatever the logit scale
    assert torch.equal(LogitNoise(0.0)(logits), logits)


@pytest.mark.parametrize(
    ("options", "named"), [({"scale": -1}, "'scale'"), ({"relative": "yes"}, "'relative'")]
)
def test_bad_logit_noise_options_name_the_option(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        build_defense("logit-noise", SHAPE, 10, **options)
