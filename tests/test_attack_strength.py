"""Strength checks on real models: what a user expects of PGD and FGSM."""

from __future__ import annotations

import torch

from robustlab.attacks import FGSM, PGD
from robustlab.evaluate import robust_accuracy
from tests.conftest import TrainedSubject


def test_pgd_breaks_undefended_mnist_model_and_beats_fgsm(mnist_model: TrainedSubject) -> None:
    x, y = mnist_model.batch(500)
    report = robust_accuracy(
        mnist_model.model,
        (x, y),
        {"fgsm": FGSM(eps=0.3), "pgd": PGD(eps=0.3, alpha=0.01, steps=40)},
    )
    by_name = {result.name: result for result in report.attacks}
    assert report.clean_accuracy > 0.95
    assert by_name["pgd"].robust_accuracy < 0.02
    assert by_name["fgsm"].robust_accuracy > by_name["pgd"].robust_accuracy
    assert report.worst_case_accuracy <= by_name["pgd"].robust_accuracy


def test_success_grows_with_eps(digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(200)
    previous = -1.0
    for eps in (0.05, 0.1, 0.15, 0.2, 0.3):  # ε = 0 is refused: it measures nothing
        report = robust_accuracy(digits_model.model, (x, y), [PGD(eps=eps, steps=10)])
        rate = report.attacks[0].success_rate
        assert rate >= previous - 0.02, (eps, rate, previous)
        previous = rate
    assert previous > 0.95


def test_unbounded_pgd_fools_everything(digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(200)
    report = robust_accuracy(digits_model.model, (x, y), [PGD(eps=1.0, steps=20)])
    assert report.attacks[0].success_rate >= 0.99


def test_bf16_autocast_keeps_strength(mnist_model: TrainedSubject) -> None:
    x, y = mnist_model.batch(300)
    attacks = {
        "fp32": PGD(eps=0.15, alpha=0.01, steps=20),
        "bf16": PGD(eps=0.15, alpha=0.01, steps=20, precision="bf16"),
    }
    report = robust_accuracy(mnist_model.model, (x, y), attacks)
    rates = {result.name: result.success_rate for result in report.attacks}
    assert abs(rates["fp32"] - rates["bf16"]) <= 0.05, rates


def test_l2_and_l1_pgd_respect_their_balls(digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(64)
    for norm, eps in (("l2", 1.0), ("l1", 4.0)):
        x_adv = PGD(eps=eps, steps=10, norm=norm)(digits_model.model, x, y)
        delta = (x_adv - x).flatten(1)
        size = delta.norm(dim=1) if norm == "l2" else delta.abs().sum(dim=1)
        assert size.max() <= eps + 1e-4
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.isfinite(x_adv).all()


def test_bf16_early_stop_confirms_success_in_fp32(mnist_model: TrainedSubject) -> None:
    """Under bf16 a borderline example can look fooled; early stop must not freeze it there."""
    x, y = mnist_model.batch(256)
    attack = PGD(
        eps=0.3, alpha=0.01, steps=40, random_start=False, precision="bf16", early_stop=True
    )
    x_adv = attack(mnist_model.model, x, y)
    with torch.no_grad():
        fooled = (mnist_model.model(x_adv).argmax(dim=1) != y).float().mean().item()
    assert fooled >= 0.99, fooled
