"""APGD, APGD-T and the AutoAttack cascade: schedule, budget, strength, and a cross-check
against the AutoAttack authors' own implementation (``pyautoattack``) when it is installed.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import PGD
from robustlab.attacks.apgd import APGD, APGDT, checkpoints
from robustlab.attacks.autoattack import AutoAttack, CascadeRecord
from robustlab.attacks.base import AttackOutcome
from robustlab.data import load_split
from robustlab.evaluate.accuracy import evaluate_accuracy
from tests.conftest import TrainedSubject, real_data_root

EPS = 0.3
CROSS_CHECK_IMAGES = 200
"""Test images for the cross-check (the issue asks for 1000; 200 keeps it to minutes on CPU)."""
TOLERANCE_POINTS = 0.5
"""Ours may be at most this many percentage points less effective than the reference."""


@pytest.fixture(scope="session")
def at_model(mnist_model: TrainedSubject, model_cache: Path) -> TrainedSubject:
    """A *weakly* robust MNIST model: the one-epoch thesis-shallow fine-tuned for 300 steps
    (batch 50) of 2-step PGD adversarial training, ε ramped to 0.3 over the first 40%.

    Cheap (6 minutes measured on 2 cores shared with heavy other jobs; cached afterwards),
    and weak: about 55% robust accuracy under AutoAttack at ε=0.2 but under 1% at ε=0.3,
    where only small-step PGD is held off and APGD's large first steps break nearly every
    example — a gradient-masking case in which APGD must beat PGD.
    """
    path = model_cache / "mnist-shallow-pgd2-at-v1.pt"
    model = copy.deepcopy(mnist_model.model)
    try:
        model.load_state_dict(torch.load(path, weights_only=True))
    except (OSError, RuntimeError, EOFError):
        _adversarially_train(model)
        partial = path.with_suffix(".partial")
        torch.save(model.state_dict(), partial)
        partial.replace(path)
    model.eval()
    return TrainedSubject(model=model, test=mnist_model.test, dataset="mnist")


def _adversarially_train(model: nn.Module, steps: int = 300, batch: int = 50) -> None:
    train = load_split("mnist", "train", real_data_root())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():  # dropout draws from the global generator
        torch.manual_seed(0)
        _train_steps(model, optimizer, train.images, train.labels, generator, steps, batch)


def _train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    steps: int,
    batch: int,
) -> None:
    for step in range(steps):
        index = torch.randint(0, len(labels), (batch,), generator=generator)
        x, y = images[index], labels[index]
        eps = EPS * min(1.0, (step + 1) / (0.4 * steps))
        x_adv = PGD(eps=eps, alpha=1.25 * eps, steps=2, seed=step)(model, x, y)
        model.train()
        loss = F.cross_entropy(model(x_adv), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()


# --- APGD -------------------------------------------------------------------------------------


def test_checkpoints_follow_the_paper() -> None:
    # p: 0, .22, .41, .57, .70, .80, .87, .93, .99 — the authors' code checks at the same steps.
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [1]
    assert checkpoints(0) == []


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_apgd_respects_budget_and_box(norm: str, eps: float, digits_model: TrainedSubject) -> None:
    x, y = digits_model.batch(64)
    for attack in (APGD(eps=eps, norm=norm, steps=20), APGDT(eps=eps, norm=norm, steps=10)):
        x_adv = attack(digits_model.model, x, y)
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
        assert size.max() <= eps + 1e-5
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (
            evaluate_accuracy(digits_model.model, x_adv, y).accuracy
            < evaluate_accuracy(digits_model.model, x, y).accuracy
        )


def test_apgd_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"APGD\.norm"):
        APGD(norm="l1")
    with pytest.raises(ValueError, match=r"APGD\.rho"):
        APGD(rho=1.5)
    with pytest.raises(ValueError, match=r"APGDT\.target_classes"):
        APGDT(target_classes=0)
    with pytest.raises(ValueError, match="has no targeted variant"):
        x = torch.zeros(1, 1, 8, 8)
        APGDT()(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
            x,
            torch.zeros(1).long(),
            target=torch.ones(1).long(),
        )


def test_apgd_beats_pgd_with_the_same_steps(at_model: TrainedSubject) -> None:
    x, y = at_model.batch(100)
    steps = 50
    pgd = evaluate_accuracy(
        at_model.model, PGD(eps=EPS, steps=steps)(at_model.model, x, y), y
    ).accuracy
    apgd = evaluate_accuracy(
        at_model.model, APGD(eps=EPS, steps=steps)(at_model.model, x, y), y
    ).accuracy
    assert apgd <= pgd, (apgd, pgd)


# --- AutoAttack -------------------------------------------------------------------------------


class CountingModel(nn.Module):
    """Counts, per clean example, how many rows the model was called on (nearest in L∞)."""

    def __init__(self, model: nn.Module, clean: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.model = model
        self.clean = clean.flatten(1)
        self.eps = eps
        self.calls = torch.zeros(len(clean), dtype=torch.long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            distance = (x.detach().flatten(1)[:, None] - self.clean[None]).abs().amax(dim=2)
            nearest = distance.topk(2, dim=1, largest=False)
            assert torch.all(nearest.values[:, 0] <= self.eps + 1e-5)
            assert torch.all(nearest.values[:, 1] > self.eps)  # unambiguous
            self.calls += torch.bincount(nearest.indices[:, 0], minlength=len(self.calls))
        output: torch.Tensor = self.model(x)
        return output


def test_apgd_early_stop_drops_fooled_examples(digits_model: TrainedSubject) -> None:
    """With ``early_stop`` a fooled example leaves the run for good: the model sees it once
    per step until then and never again, while a robust example is evaluated at the start
    and at every step. The cascade's speed at small image counts rests on this."""
    eps, steps = 0.1, 20
    x, y = digits_model.batch(48)
    counting = CountingModel(digits_model.model, x, eps)
    x_adv = APGD(eps=eps, steps=steps, early_stop=True)(counting, x, y)
    with torch.no_grad():
        fooled = digits_model.model(x_adv).argmax(dim=1) != y
        clean_wrong = digits_model.model(x).argmax(dim=1) != y
    assert 0 < int(fooled.sum()) < len(y)  # the test needs both kinds
    assert torch.all(counting.calls[~fooled] == 1 + steps)
    assert torch.all(counting.calls[clean_wrong] == 1)
    assert bool((counting.calls[fooled & ~clean_wrong] < 1 + steps).any())


def cascade(outcome: AttackOutcome) -> CascadeRecord:
    """The record every AutoAttack run returns with its batch."""
    assert outcome.cascade is not None
    return outcome.cascade


def test_cascade_attacks_only_still_robust_examples(digits_model: TrainedSubject) -> None:
    eps = 0.1
    x, y = digits_model.batch(48)
    first = CountingModel(digits_model.model, x, eps)
    alone = cascade(AutoAttack(eps=eps, attacks=("apgd-ce",)).run(first, x, y))
    both = CountingModel(digits_model.model, x, eps)
    outcome = AutoAttack(eps=eps, attacks=("apgd-ce", "apgd-t")).run(both, x, y)
    x_adv, record = outcome.x_adv, cascade(outcome)

    assert record.robust["apgd-ce"] == alone.robust["apgd-ce"]
    assert 0 < record.robust["apgd-ce"] < record.robust["clean"]  # the test needs survivors
    with torch.no_grad():
        clean_wrong = digits_model.model(x).argmax(dim=1) != y
    assert torch.all(both.calls[clean_wrong] == 1)  # only the clean check
    # Broken by APGD-CE: APGD-T never saw them; survivors: APGD-T did.
    extra = both.calls - first.calls
    survivors = extra > 0
    assert int(survivors.sum()) == record.robust["apgd-ce"]
    assert torch.all(extra[~survivors] == 0)
    assert record.robust["apgd-t"] == round(
        evaluate_accuracy(digits_model.model, x_adv, y).accuracy * len(y)
    )


def test_cascade_record_and_first_success(mnist_model: TrainedSubject) -> None:
    x, y = mnist_model.batch(100)
    attack = AutoAttack(eps=0.15, version="fast")
    outcome = attack.run(mnist_model.model, x, y)
    x_adv, record = outcome.x_adv, cascade(outcome)
    counts = list(record.robust.values())
    assert list(record.robust) == ["clean", "apgd-ce", "apgd-t"]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] == round(evaluate_accuracy(mnist_model.model, x, y).accuracy * 100)
    assert counts[-1] == round(evaluate_accuracy(mnist_model.model, x_adv, y).accuracy * 100)
    assert sum(record.broken.values()) == counts[0] - counts[-1]
    assert (x_adv - x).abs().max() <= 0.15 + 1e-6
    assert torch.equal(attack(mnist_model.model, x, y), x_adv)  # fixed seed: same result
    assert outcome.trace is None and outcome.queries is None  # only the cascade's extras


def test_bf16_cascade_judges_success_in_fp32(mnist_model: TrainedSubject) -> None:
    """Under bf16 a borderline input can fool only the bf16 model. The cascade must count it
    as still robust (and try the next member on it), so its record agrees with the fp32 model
    on the inputs it returns and it is never weaker than its own first stage."""
    x, y = mnist_model.batch(200)
    outcome = AutoAttack(eps=0.1, version="fast", precision="bf16").run(mnist_model.model, x, y)
    x_adv, record = outcome.x_adv, cascade(outcome)
    assert 0 < record.robust["apgd-t"] < record.robust["clean"]  # the test needs survivors
    assert record.robust["apgd-t"] == round(
        evaluate_accuracy(mnist_model.model, x_adv, y).accuracy * len(y)
    )


def test_autoattack_accepts_members_as_a_list() -> None:
    """A YAML config or the CLI gives a list; the frozen attack keeps a hashable tuple."""
    attack = AutoAttack(attacks=["apgd-ce", "square"])  # type: ignore[arg-type]
    assert attack.attacks == ("apgd-ce", "square")
    hash(attack)


def test_autoattack_restarts_follow_the_version() -> None:
    """Standard spends part of FAB-T's time on more APGD-CE starts; the count is resolved at
    construction so records and labels show it."""
    assert AutoAttack().restarts == 5
    assert AutoAttack().members()["apgd-ce"].restarts == 5  # type: ignore[attr-defined]
    assert AutoAttack(version="fast").restarts == 1
    chosen = AutoAttack(restarts=2, attacks=("apgd-dlr",)).members()["apgd-dlr"]
    assert chosen.restarts == 2  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"AutoAttack\.restarts"):
        AutoAttack(restarts=0)


def test_autoattack_rejects_unknown_members() -> None:
    with pytest.raises(ValueError, match=r"AutoAttack\.attacks"):
        AutoAttack(attacks=("apgd-ce", "fab-t"))
    with pytest.raises(ValueError, match=r"AutoAttack\.attacks"):
        AutoAttack(attacks=())


# --- Cross-check against the authors' implementation ------------------------------------------

HAVE_REFERENCE = importlib.util.find_spec("pyautoattack") is not None
STAGES = ("apgd-ce", "apgd-t", "square")


def reference_cascade(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Robust accuracy after each stage of the authors' cascade, FAB-T left out as in ours.

    Their ``run_standard_evaluation`` loop, written out so every stage's count is visible:
    each member of their "standard" version (APGD-CE without restarts, APGD-T on 9 targets,
    Square with 5000 queries) runs only on the examples still robust.
    """
    from pyautoattack import AutoAttack as ReferenceAutoAttack

    reference = ReferenceAutoAttack(model, version="standard", eps=EPS, norm="Linf", seed=0)
    reference.logger.setLevel(logging.WARNING)
    members = {
        "apgd-ce": reference.apgd.perturb,
        "apgd-t": reference.apgd_targeted.perturb,
        "square": reference.square.perturb,
    }
    with torch.no_grad():
        robust = model(x).argmax(dim=1) == y
    stages = {"clean": int(robust.sum()) / len(y)}
    for name in STAGES:
        todo = robust.nonzero().squeeze(1)
        if len(todo) > 0:
            x_adv = members[name](x[todo], y[todo])
            with torch.no_grad():
                robust[todo[model(x_adv).argmax(dim=1) != y[todo]]] = False
        stages[name] = int(robust.sum()) / len(y)
    return stages


@pytest.mark.slow
@pytest.mark.skipif(
    not HAVE_REFERENCE,
    reason="pyautoattack not installed: pip install --no-deps pyautoattack==0.2.0",
)
@pytest.mark.parametrize("subject", ["mnist_model", "at_model"])
def test_matches_authors_autoattack(subject: str, request: pytest.FixtureRequest) -> None:
    """Ours at most 0.5 points above theirs after every stage, on the same images at ε=0.3."""
    trained: TrainedSubject = request.getfixturevalue(subject)
    x, y = trained.batch(CROSS_CHECK_IMAGES)
    record = cascade(AutoAttack(eps=EPS, attacks=STAGES).run(trained.model, x, y))
    ours = {name: count / len(y) for name, count in record.robust.items()}
    theirs = reference_cascade(trained.model, x, y)
    print(f"\n{subject}, {len(y)} images, eps={EPS}: ours {ours}\n  theirs {theirs}")  # -s shows it
    assert ours["clean"] == theirs["clean"]
    for name in STAGES:
        assert ours[name] <= theirs[name] + TOLERANCE_POINTS / 100, (name, ours, theirs)
