"""Properties every registered attack must have, checked the moment it is registered."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from robustlab.attacks import ATTACKS, PGD, Attack, build_attack
from robustlab.attacks.apgd import APGD, APGDT
from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.norms import get_norm
from robustlab.attacks.square import Square
from robustlab.evaluate.accuracy import evaluate_accuracy
from tests.attack_cases import FAST_PARAMS, L0_BUDGET_FIELD
from tests.conftest import TrainedSubject

COUNT = 48
TOLERANCE = 1e-5


def make(name: str, **overrides: object) -> Attack:
    return build_attack(name, **{**FAST_PARAMS[name], **overrides})


def attack_batch(
    attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """``attack(model, x, y)``; a targeted-only attack (UPSET) gets target (y + 1) mod 10,
    so each property below still applies to it (a hit on the target is a misclassification)."""
    target = (y + 1) % 10 if attack.targeted_only else None
    return attack(model, x, y, target=target)


def test_every_registered_attack_has_a_case() -> None:
    assert sorted(FAST_PARAMS) == ATTACKS.names()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_stays_in_box_and_budget(name: str, digits_model: TrainedSubject) -> None:
    attack = make(name)
    x, y = digits_model.batch(COUNT)
    x_adv = attack_batch(attack, digits_model.model, x, y)
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
        attack_batch(make(name), model, x, y)
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
    first = attack_batch(make(name, seed=3), digits_model.model, x, y)
    second = attack_batch(make(name, seed=3), digits_model.model, x, y)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_lowers_accuracy(name: str, digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(COUNT)
    clean = evaluate_accuracy(digits_model.model, x, y).accuracy
    attacked = evaluate_accuracy(
        digits_model.model, attack_batch(make(name), digits_model.model, x, y), y
    ).accuracy
    assert attacked < clean - 0.2, (clean, attacked)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_early_stop_keeps_success(name: str, digits_model: TrainedSubject) -> None:
    """Stopping fooled examples early may save work but must not make the attack weaker."""
    x, y = digits_model.batch(COUNT)
    model = digits_model.model
    plain = evaluate_accuracy(model, attack_batch(make(name), model, x, y), y).accuracy
    early = evaluate_accuracy(
        model, attack_batch(make(name, early_stop=True), model, x, y), y
    ).accuracy
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
    with pytest.raises(ConfigError, match=r"PGD.steps must be >= 1"):
        build_attack("pgd", steps=-1)


# --- Typed extras: ``run`` returns what an attack declares, and refuses the rest ------------


@pytest.mark.parametrize("name", ATTACKS.names())
def test_undeclared_options_are_refused_by_name(name: str, digits_model: TrainedSubject) -> None:
    attack = make(name)
    x, y = digits_model.batch(4)
    target = (y + 1) % 10 if attack.targeted_only else None
    owner = type(attack).__name__
    if not attack.traceable:
        with pytest.raises(ValueError, match=rf"{owner} does not trace"):
            attack.run(digits_model.model, x, y, target=target, trace=True)
    if not attack.accepts_budgets:
        with pytest.raises(ValueError, match=rf"{owner} takes no per-example budgets"):
            attack.run(digits_model.model, x, y, target=target, budgets=torch.full((4,), 0.1))


@pytest.mark.parametrize("name", [n for n in ATTACKS.names() if ATTACKS.get(n).traceable])
def test_trace_has_every_step_and_never_drops_with_early_stop(
    name: str, digits_model: TrainedSubject
) -> None:
    attack = make(name, early_stop=True)
    x, y = digits_model.batch(COUNT)
    outcome = attack.run(digits_model.model, x, y, trace=True)
    assert outcome.trace is not None
    assert outcome.trace.shape == (attack.steps + 1,)  # type: ignore[attr-defined]
    assert torch.all(outcome.trace[1:] >= outcome.trace[:-1])
    assert 0 < int(outcome.trace[-1]) <= COUNT
    assert torch.equal(outcome.x_adv, attack(digits_model.model, x, y))


@pytest.mark.parametrize("name", [n for n in ATTACKS.names() if ATTACKS.get(n).accepts_budgets])
def test_budgets_bound_every_example_by_its_own_radius(
    name: str, digits_model: TrainedSubject
) -> None:
    attack = make(name)
    assert attack.budget is not None
    x, y = digits_model.batch(COUNT)
    radii = torch.linspace(0.0, attack.budget, COUNT)
    x_adv = attack.run(digits_model.model, x, y, budgets=radii).x_adv
    size = get_norm(attack.threat).size(x_adv - x)
    assert torch.all(size <= radii + TOLERANCE)
    assert size[0] == 0 and size[-1] > 0
    assert x_adv.min() >= 0 and x_adv.max() <= 1


# --- Best of restarts: one loop in the base class, the numbers of the four it replaced -----


def tiny_subject() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded 5-class conv net on 24 random 6×6 images, labelled by its own predictions:
    at ε = 0.05 about half survive every attack, so later restarts have work to do."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 5))
    x = torch.rand(24, 1, 6, 6)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model.eval(), x, y


PINNED: dict[str, tuple[Attack, float, int]] = {
    "pgd": (PGD(eps=0.05, steps=5, restarts=3), 432.435394, 12),
    "apgd": (APGD(eps=0.05, steps=8, restarts=2), 432.548951, 12),
    "apgd-t": (APGDT(eps=0.05, steps=8, restarts=2, target_classes=3), 433.930391, 14),
    "square": (Square(eps=0.05, queries=20, restarts=2), 430.674764, 6),
    "autoattack": (AutoAttack(eps=0.05, version="fast"), 433.321169, 14),
}
"""Sum of x_adv and examples fooled, measured (torch 2.13, CPU) before the restart loops of
PGD, APGD, APGD-T and Square moved into ``Attack._best_of_restarts``. Scaling the weights by
1 + 1e-6·N(0, 1) leaves every sum unchanged to 1e-6, so a mismatch means other random draws
or other tie-breaking, not other rounding."""


@pytest.mark.parametrize("name", PINNED)
def test_restarts_keep_their_pinned_results(name: str) -> None:
    attack, total, fooled = PINNED[name]
    model, x, y = tiny_subject()
    x_adv = attack(model, x, y)
    with torch.no_grad():
        assert int((model(x_adv).argmax(dim=1) != y).sum()) == fooled
    assert float(x_adv.double().sum()) == pytest.approx(total, abs=1e-4)


@pytest.mark.parametrize(
    "single",
    [PGD(eps=0.05, steps=5), APGD(eps=0.05, steps=8), Square(eps=0.05, queries=20)],
    ids=lambda attack: attack.name,
)
def test_later_restarts_run_only_on_survivors(single: Attack) -> None:
    """The first restart draws what a single run draws, so every example it fooled comes back
    exactly as a single run returns it; later restarts can only add fooled examples."""
    model, x, y = tiny_subject()
    once = single(model, x, y)
    several = dataclasses.replace(single, restarts=3)(model, x, y)  # type: ignore[type-var]
    with torch.no_grad():
        fooled_once = model(once).argmax(dim=1) != y
        fooled_several = model(several).argmax(dim=1) != y
    assert bool(fooled_once.any()) and not torch.equal(once, several)
    assert torch.equal(several[fooled_once], once[fooled_once])
    assert torch.all(fooled_several[fooled_once])
