"""The sanity checks on trained digits models: they flag defenses that only hide their
gradients (a JPEG codec, logit noise, distillation) under the naive attack, and do not flag
PGD adversarial training or the adaptive attacks that see through the masking."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from robustlab.attacks import PGD
from robustlab.defenses import Gradients, build_defended
from robustlab.evaluate.defended import AttackPlan, evaluate_plan
from robustlab.evaluate.sanity import CheckSettings, _stochastic_check, run_checks
from tests.conftest import TrainedSubject, _trained

SETTINGS = CheckSettings(images=40, square_queries=100)
EPS = 0.1
"""The adversarially trained model's ε."""
MASKED_EPS = 0.2
"""Where the undefended digits model falls to ~10% under PGD-20, so a defense that keeps
~100% under the naive attack is hiding its gradients, not resisting."""


@pytest.fixture(scope="module")
def adversarial_model(model_cache: Path) -> TrainedSubject:
    """thesis-shallow on digits: 15 standard epochs, then 10 of PGD-7 training at ε = 0.1."""
    raw = {
        "data": {"dataset": "digits"},
        "model": {"name": "thesis-shallow"},
        "device": "cpu",
        "phases": [
            {"name": "clean", "epochs": 15, "batch_size": 64},
            {
                "name": "adversarial",
                "epochs": 10,
                "batch_size": 64,
                "objective": {
                    "type": "adversarial",
                    "attack": {"name": "pgd", "eps": EPS, "steps": 7},
                },
            },
        ],
        "evaluation": {"train_subset": 0, "attacks": []},
    }
    return _trained(model_cache, "digits-shallow-pgd-at-v1", raw, None)


def _flags(
    model: nn.Module, subject: TrainedSubject, plan: AttackPlan, surrogate: nn.Module | None
) -> tuple[float, list[str]]:
    x, y = subject.batch(SETTINGS.images)
    scored = evaluate_plan(model, x, y, plan)
    checks = run_checks(model, x, y, plan, scored.robust, settings=SETTINGS, surrogate=surrogate)
    return scored.robust_accuracy, [check.name for check in checks if not check.passed]


def _naive(eps: float = EPS) -> AttackPlan:
    return AttackPlan(attack=PGD(eps=eps, steps=10))


def _undefended(subject: TrainedSubject) -> float:
    x, y = subject.batch(SETTINGS.images)
    return evaluate_plan(subject.model, x, y, _naive(MASKED_EPS)).robust_accuracy


def test_jpeg_is_flagged_under_the_naive_attack_and_falls_to_bpda(digits_model) -> None:
    model = build_defended(digits_model.model, [{"name": "jpeg", "quality": 50}], (1, 8, 8), 10)
    naive, flagged = _flags(model, digits_model, _naive(MASKED_EPS), None)
    assert "gradients" in flagged
    assert naive > 0.9
    bpda = AttackPlan(attack=PGD(eps=MASKED_EPS, steps=20), gradients=Gradients(bpda=True))
    adaptive, adaptive_flags = _flags(model, digits_model, bpda, None)
    assert "gradients" not in adaptive_flags
    assert adaptive <= _undefended(digits_model) + 0.1


def test_logit_noise_is_flagged_under_the_naive_attack(digits_model) -> None:
    model = build_defended(
        digits_model.model, [{"name": "logit-noise", "scale": 0.5}], (1, 8, 8), 10
    )
    _, flagged = _flags(model, digits_model, _naive(MASKED_EPS), None)
    assert "stochastic" in flagged  # relative noise 0.5: gradients at one input disagree
    eot = AttackPlan(attack=PGD(eps=MASKED_EPS, steps=20), gradients=Gradients(eot=10))
    x, y = digits_model.batch(SETTINGS.images)
    assert _stochastic_check(model, x, y, eot, SETTINGS, seed=0).passed  # EOT: consistent


def test_pgd_adversarial_training_is_not_flagged(adversarial_model, digits_model) -> None:
    accuracy, flagged = _flags(
        adversarial_model.model, adversarial_model, _naive(), digits_model.model
    )
    assert flagged == []
    assert accuracy > 0.3  # robust, and the checks agree it is measured, not masked


def test_an_undefended_model_is_not_flagged(digits_model) -> None:
    _, flagged = _flags(digits_model.model, digits_model, _naive(), None)
    assert flagged == []


def test_checks_are_reproducible(digits_model) -> None:
    model = build_defended(
        digits_model.model, [{"name": "logit-noise", "scale": 0.5}], (1, 8, 8), 10
    )
    x, y = digits_model.batch(50)
    plan = _naive()
    first = evaluate_plan(model, x, y, plan, seed=3).robust
    second = evaluate_plan(model, x, y, plan, seed=3).robust
    assert torch.equal(first, second)


def test_square_runs_once_for_several_plans_sharing_a_memo(digits_model) -> None:
    """Square takes no gradient, so plans that differ only in how they differentiate share its
    answer; the memo must hold exactly what a fresh run measures."""
    model = build_defended(digits_model.model, [{"name": "jpeg", "quality": 50}], (1, 8, 8), 10)
    x, y = digits_model.batch(SETTINGS.images)
    memo: dict[tuple[float, str], float] = {}
    naive = _naive()
    robust = evaluate_plan(model, x, y, naive).robust
    fresh = run_checks(model, x, y, naive, robust, settings=SETTINGS, black_box_memo=memo)
    assert list(memo) == [(EPS, "linf")]
    square = next(check for check in fresh if check.name == "black box")
    assert f"{memo[EPS, 'linf']:.1%} accuracy under Square" in square.measured
    memo[EPS, "linf"] = 0.0  # a memoised answer is used, not recomputed
    bpda = AttackPlan(attack=PGD(eps=EPS, steps=10), gradients=Gradients(bpda=True))
    again = run_checks(model, x, y, bpda, robust, settings=SETTINGS, black_box_memo=memo)
    reused = next(check for check in again if check.name == "black box")
    assert reused.measured.startswith("0.0% accuracy under Square")


@pytest.fixture(scope="module")
def distilled_model(model_cache: Path) -> TrainedSubject:
    """thesis-shallow on digits by defensive distillation: a teacher trained at T = 100, then
    a student on its soft labels at T = 100, deployed at T = 1."""
    phase = {"epochs": 8, "batch_size": 64}
    raw = {
        "data": {"dataset": "digits"},
        "model": {"name": "thesis-shallow"},
        "device": "cpu",
        "phases": [
            {**phase, "name": "teacher", "objective": {"type": "standard", "temperature": 100}},
            {
                **phase,
                "name": "student",
                "objective": {
                    "type": "distillation",
                    "teacher_phase": "teacher",
                    "temperature": 100,
                },
            },
        ],
        "evaluation": {"train_subset": 0, "attacks": []},
    }
    return _trained(model_cache, "digits-shallow-distilled-v2", raw, None)


def test_distillation_is_flagged_under_the_naive_attack_and_falls_to_the_cw_loss(
    distilled_model, digits_model
) -> None:
    naive, flagged = _flags(distilled_model.model, distilled_model, _naive(MASKED_EPS), None)
    assert "gradients" in flagged  # the saturated softmax: cross-entropy gradients underflow
    cw = AttackPlan(attack=PGD(eps=MASKED_EPS, steps=20, loss="cw"))
    adaptive, adaptive_flags = _flags(distilled_model.model, distilled_model, cw, None)
    assert "gradients" not in adaptive_flags  # the margin loss has gradients where CE had none
    assert adaptive < naive - 0.3
