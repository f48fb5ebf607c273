"""Calibration's bisection against closed-form answers, per-example budgets and PGD's
per-step success trace, on linear models where the optimum is known."""

from __future__ import annotations

import math

import torch
from torch import nn

from robustlab.attacks import PGD
from robustlab.attacks.iterative import trace_success
from robustlab.evaluate.calibration import calibrate, minimal_budgets


class Linear(nn.Module):
    """Two-class linear model: the smallest L∞ perturbation that flips example x is
    |margin(x)| / ‖w₁ − w₀‖₁, known in closed form."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def test_bisection_finds_the_closed_form_minimal_eps() -> None:
    torch.manual_seed(0)
    weight = torch.randn(2, 16)
    model = Linear(weight)
    x = 0.4 + 0.2 * torch.rand(200, 1, 4, 4)  # inside the box by more than any ε found
    with torch.no_grad():
        y = model(x).argmax(dim=1)
        margin = (model(x)[:, 0] - model(x)[:, 1]).abs()
    exact = margin / (weight[1] - weight[0]).abs().sum()
    keep = exact < 0.1
    x, y, exact = x[keep], y[keep], exact[keep]
    attack = PGD(eps=1.0, steps=50, alpha=None, random_start=False)
    found = minimal_budgets(model, x, y, attack, high=0.2, iterations=9)
    resolution = 0.2 / 2**9
    assert (found >= exact - 1e-4).all()  # no attack beats the optimum
    assert (found <= exact + 2 * resolution + 1e-4).all()  # and PGD finds it
    calibration = calibrate([model], x, y, attack, target_success=0.5, high=0.2, iterations=9)
    assert calibration.success_at(calibration.eps) >= 0.5
    assert calibration.success_at(calibration.eps - 2 * resolution) < 0.5
    assert abs(calibration.eps - exact.median().item()) < 3 * resolution


class CountingPGD(PGD):
    """PGD that counts the examples it attacks."""

    attacked = 0

    def with_budgets(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        CountingPGD.attacked += len(x)
        return super().with_budgets(model, x, y, eps)


def test_refining_only_the_deciding_brackets_finds_the_same_eps_for_fewer_attacks() -> None:
    """Pooled over two models and in small batches, the target-only bisection must give the
    all-examples answer, keep every bracket around the closed-form optimum, and attack less."""
    torch.manual_seed(3)
    models = [Linear(torch.randn(2, 16)), Linear(torch.randn(2, 16))]
    x = 0.4 + 0.2 * torch.rand(300, 1, 4, 4)
    y = models[0](x).argmax(dim=1)  # the second model gets some wrong: they must be left out
    attack = CountingPGD(eps=1.0, steps=30, alpha=None, random_start=False)
    results = {}
    for refine in ("all", "target"):
        CountingPGD.attacked = 0
        results[refine] = calibrate(
            models,
            x,
            y,
            attack,
            target_success=0.56,
            high=0.2,
            iterations=7,
            batch_size=64,
            refine=refine,  # type: ignore[arg-type]
        )
        results[refine + "-attacked"] = CountingPGD.attacked  # type: ignore[assignment]
    full, quick = results["all"], results["target"]
    assert math.isfinite(full.eps) and quick.eps == full.eps
    assert len(quick.minimal_eps) == len(full.minimal_eps) < 600
    assert results["target-attacked"] < 0.7 * results["all-attacked"]  # type: ignore[operator]
    for calibration in (full, quick):
        bounds = zip(calibration.lower_eps, calibration.minimal_eps, strict=True)
        assert all(low < upper for low, upper in bounds)
        for _eps, found, possible in calibration.curve([0.02 * i for i in range(11)]):
            assert found <= possible
    # away from ε the quick curve is a band that contains the sharp one
    for eps in [0.01 * i for i in range(21)]:
        assert quick.success_at(eps) <= full.success_at(eps) + 1e-9
        assert full.possible_success_at(eps) <= quick.possible_success_at(eps) + 1e-9


def test_per_example_budgets_are_respected() -> None:
    torch.manual_seed(1)
    model = Linear(torch.randn(2, 16))
    x = torch.rand(32, 1, 4, 4)
    y = torch.randint(0, 2, (32,))
    eps = torch.linspace(0.0, 0.3, 32)
    x_adv = PGD(eps=1.0, steps=5).with_budgets(model, x, y, eps)
    size = (x_adv - x).flatten(1).abs().amax(dim=1)
    assert (size <= eps + 1e-6).all() and size[-1] > 0.1
    assert ((x_adv >= 0) & (x_adv <= 1)).all()


def test_trace_counts_fooled_examples_after_every_step() -> None:
    torch.manual_seed(2)
    model = Linear(torch.randn(2, 16))
    x = torch.rand(64, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    attack = PGD(eps=0.05, steps=10, early_stop=True)
    x_adv, counts = trace_success(attack, model, x, y)
    assert counts.shape == (11,)
    assert (counts[1:] >= counts[:-1]).all()  # early stop: fooled examples stay fooled
    with torch.no_grad():
        assert counts[-1] == (model(x_adv).argmax(dim=1) != y).sum()
