"""JSMA (Papernot et al. 2016) and substitute transfer (Papernot et al. 2017) on real models.

Measured numbers are printed (``pytest -s``) and repeated in assertion messages. The JSMA
cross-check runs ART's SaliencyMapMethod (a peer in requirements/peers.txt) on the same
model, images and targets; it is skipped when ART is not installed.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from robustlab.attacks import build_attack
from robustlab.attacks.jsma import JSMA, _best_pairs
from robustlab.attacks.transfer import SubstituteTransfer
from robustlab.errors import ConfigError
from tests.conftest import TrainedSubject

JSMA_COUNT = 50
MNIST_FEATURES = 28 * 28
PEER_TOLERANCE = 0.06
"""Largest gap in success rate allowed between ours and ART's JSMA on the same 50 targets."""


def random_targets(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    shift = torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(seed))
    return (y + shift) % 10


def changed_features(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x_adv != x).flatten(1).sum(dim=1)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


@pytest.fixture(scope="module")
def jsma_run(mnist_model: TrainedSubject) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Our JSMA with the paper's settings on 50 MNIST test images and random targets."""
    x, y = mnist_model.batch(JSMA_COUNT)
    target = random_targets(y)
    x_adv = JSMA(theta=1.0, gamma=0.1)(mnist_model.model, x, y, target=target)
    return x, target, x_adv


def test_jsma_reaches_targets_on_mnist(
    mnist_model: TrainedSubject, jsma_run: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> None:
    """Paper (LeNet on MNIST, Υ = 14.5%): 97% success changing 4.02% of the features."""
    x, target, x_adv = jsma_run
    hit = predict(mnist_model.model, x_adv) == target
    changed = changed_features(x_adv, x)
    budget = math.floor(0.1 * MNIST_FEATURES)
    success = hit.float().mean().item()
    share = changed[hit].float().mean().item() / MNIST_FEATURES
    print(f"\nJSMA gamma=0.1 on MNIST: success {success:.1%}, features changed {share:.2%}")
    assert changed.max() <= budget
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv >= x).all(), "theta > 0 only increases features"
    assert success >= 0.8, (success, share)
    assert share < 0.06, (success, share)


def test_jsma_matches_art_saliency_map_method(
    mnist_model: TrainedSubject, jsma_run: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> None:
    """ART on softmax outputs picks the same pairs: its top-2 of ∂F_t/∂x is our pair argmax."""
    classification = pytest.importorskip(
        "art.estimators.classification", reason="adversarial-robustness-toolbox not installed"
    )
    evasion = pytest.importorskip("art.attacks.evasion")
    x, target, x_adv = jsma_run
    # A copy: ART back-propagates through the model with .backward().
    peer_model = nn.Sequential(copy.deepcopy(mnist_model.model), nn.Softmax(dim=1)).eval()
    classifier = classification.PyTorchClassifier(
        model=peer_model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    peer = evasion.SaliencyMapMethod(
        classifier, theta=1.0, gamma=0.1, batch_size=JSMA_COUNT, verbose=False
    )
    peer_adv = torch.from_numpy(peer.generate(x.numpy(), y=target.numpy()))
    ours = (predict(mnist_model.model, x_adv) == target).float().mean().item()
    theirs = (predict(mnist_model.model, peer_adv) == target).float().mean().item()
    same_pixels = ((x_adv != x) == (peer_adv != x)).flatten(1).all(dim=1).float().mean().item()
    print(f"\nJSMA success: ours {ours:.1%}, ART {theirs:.1%}; same pixels on {same_pixels:.0%}")
    assert abs(ours - theirs) <= PEER_TOLERANCE, (ours, theirs)
    assert same_pixels >= 0.8, same_pixels


def test_jsma_logits_variant_and_decreasing_features(digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(48)
    target = (y + 1) % 10
    for theta in (1.0, -1.0):
        attack = JSMA(theta=theta, max_pixels=20, saliency="logits")
        x_adv = attack(digits_model.model, x, y, target=target)
        assert changed_features(x_adv, x).max() <= 20
        assert (x_adv >= x).all() if theta > 0 else (x_adv <= x).all()
        hit = (predict(digits_model.model, x_adv) == target).float().mean().item()
        assert hit > 0.5, (theta, hit)


def test_jsma_untargeted_call_draws_seeded_targets(digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(32)
    attack = JSMA(max_pixels=20, seed=5)
    first = attack(digits_model.model, x, y)
    assert torch.equal(first, attack(digits_model.model, x, y))
    fooled = (predict(digits_model.model, first) != y).float().mean().item()
    assert fooled > 0.7, fooled


def test_pruned_pair_search_is_exact() -> None:
    """The bound-pruned search finds a pair scoring as high as scoring all n² pairs."""
    generator = torch.Generator().manual_seed(0)
    count, features = 12, 300
    for increasing in (True, False):
        toward = torch.randn(count, features, generator=generator)
        away = torch.randn(count, features, generator=generator) - 0.3 * toward
        domain = torch.rand(count, features, generator=generator) > 0.3
        first, second = _best_pairs(toward, away, domain, increasing)
        sign = 1.0 if increasing else -1.0
        alpha = sign * (toward[:, :, None] + toward[:, None, :])
        beta = sign * (away[:, :, None] + away[:, None, :])
        allowed = domain[:, :, None] & domain[:, None, :] & ~torch.eye(features, dtype=torch.bool)
        scores = torch.where(allowed & (alpha > 0) & (beta < 0), alpha * -beta, 0.0)
        rows = torch.arange(count)
        assert (first != second).all()
        assert domain[rows, first].all() and domain[rows, second].all()
        best = scores.flatten(1).amax(dim=1)
        torch.testing.assert_close(scores[rows, first, second], best)


def test_jsma_rejects_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="theta must be non-zero"):
        build_attack("jsma", theta=0.0)
    with pytest.raises(ConfigError, match=r"gamma must be <= 1"):
        build_attack("jsma", gamma=1.5)
    with pytest.raises(ConfigError, match="saliency"):
        build_attack("jsma", saliency="softmax")
    assert JSMA(gamma=0.1).feature_budget(784) == 78
    assert JSMA(max_pixels=10).feature_budget(784) == 10


class LabelOracle(nn.Module):
    """The attacked model as a black box: refuses any call that autograd could trace."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.queries = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.requires_grad:
            raise AssertionError("the oracle was called with autograd enabled")
        self.queries += len(x)
        output: torch.Tensor = self.model(x)
        return output


def test_substitute_transfer_beats_random_noise(mnist_model: TrainedSubject) -> None:
    """Paper (MetaMind's MNIST oracle, ε = 0.3, 6 rounds): 84.24% of FGSM examples transfer."""
    x, y = mnist_model.batch(400)
    oracle = LabelOracle(mnist_model.model).eval()
    attack = SubstituteTransfer(
        eps=0.3, seed_examples=150, rounds=4, substitute_depth=1, batch_size=64
    )
    rng_before = torch.get_rng_state()
    x_adv = attack(oracle, x, y)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert oracle.queries == attack.oracle_queries(len(x)) == 150 * 2**4
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    model = mnist_model.model
    correct = predict(model, x) == y
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).sign()
    baseline_adv = (x + 0.3 * noise).clamp(0, 1)
    held_out = torch.arange(len(x)) >= 150
    transfer = ((predict(model, x_adv) != y) & correct).sum() / correct.sum()
    transfer_held_out = ((predict(model, x_adv) != y) & correct & held_out).sum() / (
        correct & held_out
    ).sum()
    baseline = ((predict(model, baseline_adv) != y) & correct).sum() / correct.sum()
    print(
        f"\nsubstitute FGSM transfer at eps=0.3: {transfer:.1%} (held-out "
        f"{transfer_held_out:.1%}), random-sign noise {baseline:.1%}, {oracle.queries} queries"
    )
    assert transfer > max(3 * baseline, baseline + 0.15), (transfer, baseline)
    assert transfer_held_out > baseline + 0.15, (transfer_held_out, baseline)


def test_substitute_is_untargeted_and_validates(digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(8)
    attack = SubstituteTransfer(rounds=1, epochs=1)
    with pytest.raises(ValueError, match="no targeted variant"):
        attack(digits_model.model, x, y, target=(y + 1) % 10)
    assert attack.threat == "linf" and attack.budget == 0.3
    assert SubstituteTransfer(attack="pgd", steps=5).inner_attack().describe()["steps"] == 5
    with pytest.raises(ConfigError, match="norm-ball attack"):
        build_attack("substitute", attack="jsma")
    with pytest.raises(ConfigError, match="unknown model"):
        build_attack("substitute", substitute="resnet9000")
