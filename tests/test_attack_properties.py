"""Properties every registered attack must have, checked the moment it is registered."""

from __future__ import annotations

import pytest
import torch

from robustlab.attacks import ATTACKS, Attack, build_attack
from robustlab.attacks.norms import get_norm
from robustlab.evaluate.accuracy import evaluate_accuracy
from tests.attack_cases import FAST_PARAMS, L0_BUDGET_FIELD
from tests.conftest import TrainedSubject

COUNT = 48
TOLERANCE = 1e-5


def make(name: str, **overrides: object) -> Attack:
    return build_attack(name, **{**FAST_PARAMS[name], **overrides})


def test_every_registered_attack_has_a_case() -> None:
    assert sorted(FAST_PARAMS) == ATTACKS.names()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_stays_in_box_and_budget(name: str, digits_model: TrainedSubject) -> None:
    attack = make(name)
    x, y = digits_model.batch(COUNT)
    x_adv = attack(digits_model.model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = x_adv - x
    if attack.threat in ("linf", "l2", "l1"):
        assert attack.budget is not None
        assert get_norm(attack.threat).size(delta).max() <= attack.budget + TOLERANCE
    if attack.threat == "l0":
        pixels = int(getattr(attack, L0_BUDGET_FIELD[name]))
        changed = (delta.abs().amax(dim=1) > 0).flatten(1).sum(dim=1)  # per pixel location
        assert changed.max() <= pixels


@pytest.mark.parametrize("name", ATTACKS.names())
def test_leaves_model_untouched(name: str, digits_model: TrainedSubject) -> None:
    """Mode of every submodule, pending parameter gradients and requires_grad flags."""
    model = digits_model.model
    x, y = digits_model.batch(16)
    model.train()
    model.body[0].eval()  # a deliberately frozen submodule must stay frozen
    parameters = list(model.parameters())
    parameters[-1].requires_grad_(False)
    for parameter in parameters[:-1]:
        parameter.grad = torch.full_like(parameter, 0.5)
    modes = {module: module.training for module in model.modules()}
    weights = [p.detach().clone() for p in parameters]
    try:
        make(name)(model, x, y)
        assert {module: module.training for module in model.modules()} == modes
        assert [p.requires_grad for p in parameters] == [True] * (len(parameters) - 1) + [False]
        for parameter in parameters[:-1]:
            assert parameter.grad is not None and torch.all(parameter.grad == 0.5)
        assert parameters[-1].grad is None
        assert all(torch.equal(p, w) for p, w in zip(parameters, weights, strict=True))
    finally:
        parameters[-1].requires_grad_(True)
        for parameter in parameters:
            parameter.grad = None
        model.eval()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_same_seed_same_result(name: str, digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(16)
    first = make(name, seed=3)(digits_model.model, x, y)
    second = make(name, seed=3)(digits_model.model, x, y)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_lowers_accuracy(name: str, digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(COUNT)
    clean = evaluate_accuracy(digits_model.model, x, y).accuracy
    attacked = evaluate_accuracy(
        digits_model.model, make(name)(digits_model.model, x, y), y
    ).accuracy
    assert attacked < clean - 0.2, (clean, attacked)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_early_stop_keeps_success(name: str, digits_model: TrainedSubject) -> None:
    """Stopping fooled examples early may save work but must not make the attack weaker."""
    x, y = digits_model.batch(COUNT)
    model = digits_model.model
    plain = evaluate_accuracy(model, make(name)(model, x, y), y).accuracy
    early = evaluate_accuracy(model, make(name, early_stop=True)(model, x, y), y).accuracy
    assert early <= plain + 2 / COUNT


@pytest.mark.parametrize("name", [n for n in ATTACKS.names() if not ATTACKS.get(n).untargeted_only])
def test_targeted_hits_target(name: str, digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(COUNT)
    target = (y + 1) % 10
    params = {"eps": 0.3} if "eps" in FAST_PARAMS[name] else {}
    x_adv = make(name, **params)(digits_model.model, x, y, target=target)
    with torch.no_grad():
        hit = (digits_model.model(x_adv).argmax(dim=1) == target).float().mean().item()
    assert hit > 0.5, hit


def test_rejects_pixels_outside_the_box(digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(4)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        make("pgd")(digits_model.model, x * 255, y)


def test_build_attack_names_bad_parameters() -> None:
    from robustlab.errors import ConfigError

    with pytest.raises(ConfigError, match="attack 'pgd' has no parameter 'epsilon'"):
        build_attack("pgd", epsilon=0.3)
    with pytest.raises(ConfigError, match=r"PGD.steps must be >= 0"):
        build_attack("pgd", steps=-1)
