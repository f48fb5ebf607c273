"""The catastrophic-overfitting check on the real case it exists for.

FGSM-RS training at ε = 0.3 on MNIST (Wong et al.'s step α = 1.25ε, Adam, no schedule)
overfits catastrophically on the thesis's shallow network: the model learns to defeat its own
single-step attack while multi-step PGD breaks it almost every time. One epoch of it, then the
check as the trainer runs it at the end of every epoch (a probe of training images, the
training attack against PGD-10), must flag it; the test then confirms independently, on test
images, that what was flagged is the real collapse.
"""

from __future__ import annotations

import copy

import pytest
import torch

from robustlab.attacks import FGSM, PGD
from robustlab.config.objectives import FGSMRSObjectiveConfig, OverfittingCheckConfig
from robustlab.data import load_split
from robustlab.evaluate.accuracy import evaluate_accuracy
from robustlab.train.monitoring import check_overfitting
from robustlab.train.objectives import TrainingStep, build_objective
from tests.conftest import TrainedSubject, real_data_root

EPS = 0.3
BATCH = 128


@pytest.mark.slow
def test_check_flags_fgsm_rs_collapse_on_real_mnist(mnist_model: TrainedSubject) -> None:
    torch.manual_seed(0)
    model = copy.deepcopy(mnist_model.model)
    train = load_split("mnist", "train", real_data_root())
    objective = build_objective(FGSMRSObjectiveConfig(eps=EPS))
    check = OverfittingCheckConfig()
    probe = torch.arange(check.images) * (len(train.images) // check.images)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    model.train()
    for step, index in enumerate(torch.randperm(len(train.images)).split(BATCH)):
        output = objective(
            model,
            train.images[index],
            train.labels[index],
            TrainingStep(epoch=step * BATCH / len(train.images), index=step),
        )
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
    model.eval()
    flagged = check_overfitting(
        model,
        objective,
        check,
        train.images[probe],
        train.labels[probe],
        None,
        batch_size=512,
        device=torch.device("cpu"),
    )
    assert flagged["flagged"], f"one epoch of FGSM-RS at ε=0.3 not flagged: {flagged}"
    assert flagged["gap"] > check.max_gap

    # Independent confirmation on test images: robust to single-step attacks, not to PGD.
    x, y = mnist_model.batch(500)
    fgsm = evaluate_accuracy(model, FGSM(eps=EPS)(model, x, y), y).accuracy
    pgd = evaluate_accuracy(model, PGD(eps=EPS, steps=50, alpha=0.01)(model, x, y), y).accuracy
    # Measured: probe 89% under the training attack vs 2% under PGD-10; test FGSM 78%, PGD-50 4%.
    assert fgsm > 0.6, f"FGSM accuracy {fgsm:.1%}: the model is not defeating its own attack"
    assert pgd < 0.1, f"PGD-50 accuracy {pgd:.1%}: not a catastrophic collapse"
    assert fgsm - pgd > check.max_gap
