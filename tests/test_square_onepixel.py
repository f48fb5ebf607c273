"""Square Attack and the one-pixel attack: strength, budgets, query accounting, no gradients.

Both are score-based black-box attacks, so besides strength these tests check what makes them
black-box: the model is only ever called with autograd off, and Square's per-example query
counts match the images the model actually saw. Peer libraries, when installed, serve as
strength oracles on the same model and images.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.attacks.onepixel import OnePixel
from robustlab.attacks.square import Square, window_fraction
from tests.conftest import TrainedSubject


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Many tiny forward passes: one intra-op thread avoids oversubscribing a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class ScoresOnly(nn.Module):
    """Wraps a model; records every batch it sees and fails if autograd is on in forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled(), "a black-box attack ran the model with autograd on"
        assert not x.requires_grad
        self.batch_sizes.append(len(x))
        output: torch.Tensor = self.model(x)
        return output


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def success_rate(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    """Share of the initially correct examples that the attack misclassifies."""
    correct = predictions(model, x) == y
    broken = correct & (predictions(model, x_adv) != y)
    return broken.sum().item() / max(correct.sum().item(), 1)


def changed_pixels(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    return ((x_adv - x).abs().amax(dim=1) > 0).flatten(1).sum(dim=1)


def test_p_schedule_halves_at_the_papers_marks_scaled_to_the_budget() -> None:
    assert window_fraction(0.8, 0, 10_000) == 0.8
    assert window_fraction(0.8, 10, 10_000) == 0.8
    assert window_fraction(0.8, 11, 10_000) == 0.4
    assert window_fraction(0.8, 9_999, 10_000) == 0.8 / 512
    assert window_fraction(0.8, 100, 1_000) == 0.8 / 16  # 1000 of 10 000: past 10 … 500
    assert window_fraction(0.8, 101, 1_000) == 0.8 / 32  # 1010: past 1000 as well


def test_square_linf_breaks_undefended_mnist(mnist_model: TrainedSubject) -> None:
    x, y = mnist_model.batch(200)
    result = Square(eps=0.3, queries=1000).run(mnist_model.model, x, y)
    rate = success_rate(mnist_model.model, x, result.x_adv, y)
    print(
        f"Square L∞ ε=0.3, 1000 queries, 200 MNIST images: success {rate:.1%}, "
        f"mean queries {result.queries.float().mean():.0f}"
    )
    assert rate >= 0.95
    assert (result.x_adv - x).abs().max() <= 0.3 + 1e-6
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert result.queries.max() <= 1 + 1000


def test_square_l2_respects_the_ball_and_search_beats_the_start(
    digits_model: TrainedSubject,
) -> None:
    model = digits_model.model
    x, y = digits_model.batch(100)
    searched = Square(eps=1.0, norm="l2", queries=200)(model, x, y)
    start_only = Square(eps=1.0, norm="l2", queries=1)(model, x, y)
    assert (searched - x).flatten(1).norm(dim=1).max() <= 1.0 + 1e-5
    assert searched.min() >= 0 and searched.max() <= 1
    rate, start_rate = (success_rate(model, x, a, y) for a in (searched, start_only))
    assert rate >= 0.6 and rate > start_rate + 0.3, (rate, start_rate)


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_targeted_square_hits_the_target(digits_model: TrainedSubject, loss: str) -> None:
    x, y = digits_model.batch(50)
    target = (y + 3) % 10
    attack = Square(eps=0.3, queries=300, loss=loss)  # type: ignore[arg-type]
    x_adv = attack(digits_model.model, x, y, target=target)
    hit = (predictions(digits_model.model, x_adv) == target).float().mean().item()
    assert hit >= 0.7, hit  # 0.82 (ce) and 0.78 (margin) measured


def test_query_counts_match_the_images_the_model_saw(digits_model: TrainedSubject) -> None:
    """Fooled examples stop costing queries; unbroken ones use the whole budget per restart."""
    x, y = digits_model.batch(100)
    y = y.clone()
    y[:5] = (y[:5] + 1) % 10  # wrong labels: "fooled" by the clean input, one query each
    model = ScoresOnly(digits_model.model)
    budget, restarts = 40, 2
    result = Square(eps=0.1, queries=budget, restarts=restarts).run(model, x, y)
    queries = result.queries
    assert int(queries.sum()) == sum(model.batch_sizes)
    assert torch.all(queries[:5] == 1)
    broken = predictions(digits_model.model, result.x_adv) != y
    assert torch.all(queries[~broken] == 1 + restarts * budget)
    assert 0 < int(broken[5:].sum()) < 95  # a mix of fooled and unbroken examples
    assert torch.all(queries[5:][broken[5:]] < 1 + restarts * budget)
    assert torch.equal(
        Square(eps=0.1, queries=budget, restarts=restarts)(model, x, y), result.x_adv
    )


def test_one_pixel_changes_at_most_k_pixels_and_fools_some(digits_model: TrainedSubject) -> None:
    model = digits_model.model
    x, y = digits_model.batch(48)
    for pixels in (1, 3):
        x_adv = OnePixel(pixels=pixels, population=40, iterations=10)(model, x, y)
        assert changed_pixels(x, x_adv).max() <= pixels
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert success_rate(model, x, x_adv, y) >= 0.25


def test_one_pixel_on_colour_images_changes_all_channels_of_one_pixel() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 4))
    x = torch.rand(8, 3, 6, 6)
    y = predictions(model, x)
    x_adv = OnePixel(pixels=2, population=12, iterations=5)(model, x, y)
    assert changed_pixels(x, x_adv).max() <= 2


@pytest.mark.parametrize(
    "attack",
    [
        Square(eps=0.2, queries=30),
        Square(eps=1.0, norm="l2", queries=30),
        OnePixel(pixels=3, population=12, iterations=4),
    ],
    ids=["square-linf", "square-l2", "one-pixel"],
)
def test_black_box_attacks_never_use_gradients(
    digits_model: TrainedSubject, attack: Square | OnePixel
) -> None:
    wrapped = ScoresOnly(digits_model.model)
    x, y = digits_model.batch(24)
    attack(wrapped, x, y)
    attack(wrapped, x, y, target=(y + 1) % 10)
    assert wrapped.batch_sizes
    assert all(p.grad is None for p in wrapped.parameters())


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match=r"Square\.norm"):
        Square(norm="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Square\.p_init"):
        Square(p_init=0.0)
    with pytest.raises(ValueError, match=r"OnePixel\.population"):
        OnePixel(population=3)


# Peers: the same model and images; tolerances are one-sided where our variant is the stronger
# design (per-example windows; the authors' code shares one window across the batch).

requires_torchattacks = pytest.mark.skipif(
    importlib.util.find_spec("torchattacks") is None,
    reason="torchattacks not installed (pip install --no-deps torchattacks)",
)
requires_pyautoattack = pytest.mark.skipif(
    importlib.util.find_spec("pyautoattack") is None,
    reason="pyautoattack not installed (pip install --no-deps pyautoattack)",
)
SQUARE_TOLERANCE = 0.05
"""Ours may be at most 5 points less successful than the peer's Square."""
ONE_PIXEL_TOLERANCE = 0.2
"""Success of one-pixel DE varies more: the paper's DE/rand/1 vs scipy's DE/best/1/bin."""


@requires_torchattacks
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 1.0)])
def test_square_matches_torchattacks(digits_model: TrainedSubject, norm: str, eps: float) -> None:
    import torchattacks

    model = digits_model.model
    x, y = digits_model.batch(100)
    attack = Square(eps=eps, norm=norm, queries=200)  # type: ignore[arg-type]
    ours = success_rate(model, x, attack(model, x, y), y)
    peer_attack = torchattacks.Square(
        model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, n_queries=200, seed=0
    )
    with torch.random.fork_rng():  # the peer reseeds torch's global RNG
        peer = success_rate(model, x, peer_attack(x, y), y)
    print(f"Square {norm} ε={eps}, 200 queries: ours {ours:.1%}, torchattacks {peer:.1%}")
    assert ours >= peer - SQUARE_TOLERANCE, (ours, peer)


@requires_pyautoattack
def test_square_matches_the_authors_code(digits_model: TrainedSubject) -> None:
    from pyautoattack.square import SquareAttack

    model = digits_model.model
    x, y = digits_model.batch(100)
    ours = success_rate(model, x, Square(eps=0.15, queries=200)(model, x, y), y)
    with torch.no_grad(), torch.random.fork_rng():  # the peer reseeds torch's global RNG
        peer_x = SquareAttack(model, norm="Linf", eps=0.15, n_queries=200, seed=0).perturb(x, y)
    peer = success_rate(model, x, peer_x, y)
    print(f"Square L∞ ε=0.15, 200 queries: ours {ours:.1%}, authors' code {peer:.1%}")
    assert ours >= peer - SQUARE_TOLERANCE, (ours, peer)


@requires_torchattacks
def test_one_pixel_matches_torchattacks(digits_model: TrainedSubject) -> None:
    import torchattacks

    model = digits_model.model
    x, y = digits_model.batch(32)
    # torchattacks' popsize is per parameter: 4 × (3 pixels × 3 genes) = 36 members.
    ours_x = OnePixel(pixels=3, population=36, iterations=10)(model, x, y)
    state = np.random.get_state()
    try:
        np.random.seed(0)  # scipy's differential evolution draws from numpy's global RNG
        peer_x = torchattacks.OnePixel(model, pixels=3, steps=10, popsize=36, inf_batch=2048)(x, y)
    finally:
        np.random.set_state(state)
    ours, peer = success_rate(model, x, ours_x, y), success_rate(model, x, peer_x, y)
    print(f"one-pixel, 3 pixels, 36 × 10: ours {ours:.1%}, torchattacks {peer:.1%}")
    assert abs(ours - peer) <= ONE_PIXEL_TOLERANCE, (ours, peer)
    assert changed_pixels(x, ours_x).max() <= 3
