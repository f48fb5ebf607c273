"""Calibration's bisection against closed-form answers, per-example budgets
(``run(..., budgets=)``) and PGD's per-step success trace (``run(..., trace=True)``), on
linear models where the optimum is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustlab.attacks import BIM, PGD
from robustlab.attacks.apgd import APGD
from robustlab.attacks.base import AttackOutcome
from robustlab.attacks.iterative import PGDKL
from robustlab.attacks.norms import get_norm
from robustlab.evaluate.calibration import calibrate, minimal_budgets
from robustlab.evaluate.robust import robust_accuracy


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

    def run(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | None = None,
        trace: bool = False,
        budgets: torch.Tensor | None = None,
    ) -> AttackOutcome:
        CountingPGD.attacked += len(x)
        return super().run(model, x, y, target=target, trace=trace, budgets=budgets)


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


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_per_example_budgets_are_respected(norm: str) -> None:
    torch.manual_seed(1)
    model = Linear(torch.randn(2, 16))
    x = torch.rand(32, 1, 4, 4)
    y = torch.randint(0, 2, (32,))
    eps = torch.linspace(0.0, 0.3, 32)
    attack = PGD(eps=1.0, steps=5, norm=norm)  # type: ignore[arg-type]
    x_adv = attack.run(model, x, y, budgets=eps).x_adv
    size = get_norm(norm).size(x_adv - x)
    assert (size <= eps + 1e-6).all() and size[-1] > 0.1
    assert torch.all(size[0] == 0)  # a zero radius leaves the example clean
    assert ((x_adv >= 0) & (x_adv <= 1)).all()


def test_budgets_bound_the_final_projection_too() -> None:
    """PGD-KL starts from ``eps``-sized noise whatever the budgets: the base class must still
    clip every example into its own radius."""
    torch.manual_seed(4)
    model = Linear(torch.randn(2, 16))
    x = 0.2 + 0.6 * torch.rand(8, 1, 4, 4)
    y = torch.zeros(8, dtype=torch.long)
    eps = torch.zeros(8)
    # early_stop freezes the examples misclassified at the noisy start before any step
    # projects them: only the base class's final clip brings those back
    assert (model(x).argmax(dim=1) != y).any()
    x_adv = PGDKL(eps=0.3, steps=1, early_stop=True).run(model, x, y, budgets=eps).x_adv
    assert torch.equal(x_adv, x)


def test_budgets_are_checked_before_any_work() -> None:
    model = Linear(torch.randn(2, 16))
    x, y = torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="4 radii"):
        PGD(eps=0.1).run(model, x, y, budgets=torch.ones(3))
    with pytest.raises(ValueError, match="4 radii"):
        PGD(eps=0.1).run(model, x, y, budgets=-torch.ones(4))
    with pytest.raises(ValueError, match="restarts=1"):
        PGD(eps=0.1, restarts=2).run(model, x, y, budgets=torch.ones(4))
    with pytest.raises(ValueError, match=r"PGD\.eps must be > 0"):
        PGD(eps=0.0).run(model, x, y, budgets=torch.ones(4))


def test_trace_counts_fooled_examples_after_every_step() -> None:
    torch.manual_seed(2)
    model = Linear(torch.randn(2, 16))
    x = torch.rand(64, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    attack = PGD(eps=0.05, steps=10, early_stop=True)
    outcome = attack.run(model, x, y, trace=True)
    counts = outcome.trace
    assert counts is not None and counts.shape == (11,)
    assert counts[0] == 0  # every example starts classified correctly
    assert (counts[1:] >= counts[:-1]).all()  # early stop: fooled examples stay fooled
    with torch.no_grad():
        assert counts[-1] == (model(outcome.x_adv).argmax(dim=1) != y).sum()
    assert torch.equal(outcome.x_adv, attack(model, x, y))  # tracing changes nothing
    assert attack.run(model, x, y).trace is None  # only traced when asked
    with pytest.raises(ValueError, match="restarts=1"):
        PGD(eps=0.05, restarts=2).run(model, x, y, trace=True)


def test_robust_accuracy_traces_every_single_run_traceable_attack() -> None:
    """The evaluator asks each attack that declares ``traceable`` for its trace; attacks with
    restarts or without a trace report none, and batches add up."""
    torch.manual_seed(5)
    model = Linear(torch.randn(2, 16))
    x = torch.rand(40, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    attacks = {
        "pgd": PGD(eps=0.05, steps=4, early_stop=True),
        "bim": BIM(eps=0.05, steps=3),
        "pgd-restarts": PGD(eps=0.05, steps=4, restarts=2),
        "apgd": APGD(eps=0.05, steps=4),
    }
    report = robust_accuracy(model, (x, y), attacks, trace=True, batch_size=16)
    by_name = {result.name: result for result in report.attacks}
    for name, steps in (("pgd", 4), ("bim", 3)):
        trace = by_name[name].trace
        assert trace is not None and len(trace) == steps + 1
        assert trace[-1] == pytest.approx(by_name[name].success_rate, abs=1e-6)
    assert by_name["pgd-restarts"].trace is None and by_name["apgd"].trace is None
