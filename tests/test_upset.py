"""UPSET (Sarkar et al. 2017): a learned universal perturbation per target class."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from robustlab.attacks import ATTACKS, PGD, UPSET, build_attack
from robustlab.attacks.validation import BudgetError
from robustlab.cli.main import app
from robustlab.errors import ConfigError
from tests.conftest import TrainedSubject

pytestmark = pytest.mark.usefixtures("one_thread")  # 2 threads on busy cores: 10-40× slower

COUNT = 48
EPS = 0.3


def other_class(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One target per example, uniform over the classes other than its label."""
    shift = torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(seed))
    return (y + shift) % 10


def hit_rate(model: torch.nn.Module, x_adv: torch.Tensor, target: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(dim=1) == target).float().mean())


def test_registered_and_targeted_only(digits_model: TrainedSubject) -> None:
    assert "upset" in ATTACKS.names()
    attack = build_attack("upset", eps=EPS, steps=2)
    assert isinstance(attack, UPSET) and attack.threat == "linf" and attack.budget == EPS
    x, y = digits_model.batch(4)
    with pytest.raises(ValueError, match="UPSET is a targeted attack: pass target="):
        attack(digits_model.model, x, y)
    with pytest.raises(ValueError, match=r"UPSET: target classes must be in \[0, 10\)"):
        attack(digits_model.model, x, y, target=torch.full_like(y, 10))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("eps", 0.0, BudgetError),
        ("eps", 1.5, BudgetError),
        ("steps", 0, BudgetError),
        ("lr", 0.0, ValueError),
        ("hidden", 0, BudgetError),
        ("fidelity", -0.1, ValueError),
    ],
)
def test_refuses_meaningless_hyperparameters(
    field: str, value: float, error: type[Exception]
) -> None:
    with pytest.raises(error, match=rf"UPSET\.{field}"):
        UPSET(**{field: value})  # type: ignore[arg-type]


def test_reaches_targets_but_pgd_is_at_least_as_strong(digits_model: TrainedSubject) -> None:
    """One perturbation per class for all images against one per image, same ε and steps."""
    x, y = digits_model.batch(COUNT)
    target = other_class(y)
    model = digits_model.model
    upset = hit_rate(model, UPSET(eps=EPS, steps=30)(model, x, y, target=target), target)
    pgd = hit_rate(model, PGD(eps=EPS, steps=30)(model, x, y, target=target), target)
    assert upset > 0.25, upset  # clean: 0 (every target is another class)
    assert pgd >= upset, (pgd, upset)


def test_perturbation_is_universal_per_class_and_within_eps(
    digits_model: TrainedSubject,
) -> None:
    x, y = digits_model.batch(COUNT)
    target = other_class(y)
    x_adv = UPSET(eps=EPS, steps=5)(digits_model.model, x, y, target=target)
    delta = x_adv - x
    assert delta.abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    for t in set(target.tolist()):
        rows = (target == t).nonzero().squeeze(1)
        if len(rows) < 2:
            continue
        first, second = rows[0], rows[1]
        inside = (x_adv[first] > 0) & (x_adv[first] < 1) & (x_adv[second] > 0) & (x_adv[second] < 1)
        assert bool(inside.any())
        assert torch.allclose(delta[first][inside], delta[second][inside], atol=1e-6)
    different = (target != target[0]).nonzero()[0, 0]
    assert not torch.allclose(delta[0], delta[different])


def test_reproducible_for_a_seed(digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(16)
    target = other_class(y)
    model = digits_model.model
    before = torch.random.get_rng_state()
    first = UPSET(eps=EPS, steps=5, seed=1)(model, x, y, target=target)
    assert torch.equal(torch.random.get_rng_state(), before)  # a private generator only
    assert torch.equal(first, UPSET(eps=EPS, steps=5, seed=1)(model, x, y, target=target))
    assert not torch.equal(first, UPSET(eps=EPS, steps=5, seed=2)(model, x, y, target=target))


def test_fidelity_shrinks_the_perturbation(digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(32)
    target = other_class(y)
    model = digits_model.model
    sizes = []
    for fidelity in (0.0, 20.0):
        x_adv = UPSET(eps=EPS, steps=20, fidelity=fidelity)(model, x, y, target=target)
        sizes.append(float((x_adv - x).flatten(1).norm(dim=1).mean()))
    assert sizes[1] < 0.8 * sizes[0], sizes


def test_attack_command_refuses_it_by_name(digits_model: TrainedSubject, model_cache: Path) -> None:
    """``robustlab attack`` measures untargeted robust accuracy: no target to give UPSET."""
    run = model_cache / "digits-shallow-v1"  # the run directory behind ``digits_model``
    result = CliRunner().invoke(app, ["attack", str(run), "--attack", "upset", "--steps", "1"])
    assert isinstance(result.exception, ConfigError)
    assert "--attack upset is targeted only" in str(result.exception)


def test_robust_accuracy_and_experiment_plans_refuse_a_targeted_only_attack() -> None:
    import torch
    from torch import nn

    from robustlab.config import ExperimentConfig, parse_config
    from robustlab.errors import ConfigError
    from robustlab.evaluate import robust_accuracy
    from robustlab.experiments.plan import build_plan

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    with pytest.raises(ConfigError, match="targeted only"):
        robust_accuracy(model, (x, y), [UPSET(eps=0.1)])
    raw = {
        "name": "upset-plan",
        "data": {"dataset": "digits"},
        "models": [{"name": "convnet"}],
        "phases": [{"name": "clean", "epochs": 1}],
        "evaluation": {"phase_end_attacks": [{"name": "upset", "eps": 0.1}]},
    }
    with pytest.raises(ConfigError, match="targeted only"):
        build_plan(parse_config(ExperimentConfig, raw, source="test"))
