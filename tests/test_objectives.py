"""Adversarial training objectives: each trains, and each leaves a model more robust to PGD
than the same model trained on clean inputs for as long; the overfitting check stops a phase
and restores the weights before it.

One experiment on the built-in digits holds them all: a shared standard-training phase
(trained once) and one sweep point per objective for the second phase, which also exercises
sweeps over a whole objective, shared phases and the phase-end evaluation.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from robustlab.attacks import PGD
from robustlab.config import ExperimentConfig, PhaseConfig, TrialConfig, parse_config
from robustlab.config.objectives import FGSMRSObjectiveConfig, FreeObjectiveConfig
from robustlab.experiments import build_plan, run_experiment
from robustlab.experiments.collect import collect
from robustlab.models import build_model
from robustlab.store.checkpoint import load_weights
from robustlab.store.runs import RunDirectory
from robustlab.train import train_trial
from robustlab.train.objectives import (
    AdversarialObjective,
    FreeObjective,
    TrainingStep,
    build_objective,
    scheduled_attack,
)

EPS = 0.2
PGD_EVAL = {"name": "pgd", "eps": EPS, "steps": 20}
OBJECTIVES: dict[str, dict[str, Any]] = {
    "standard": {"type": "standard"},
    "adversarial": {"type": "adversarial", "attack": {"name": "pgd", "eps": EPS, "steps": 7}},
    "mixed": {
        "type": "adversarial",
        "attack": {"name": "pgd", "eps": EPS, "steps": 7},
        "clean_weight": 0.5,
    },
    "fgsm_rs": {"type": "fgsm_rs", "eps": EPS},
    "free": {"type": "free", "eps": EPS, "replays": 4},
    "trades": {
        "type": "trades",
        "beta": 6.0,
        "attack": {"name": "pgd-kl", "eps": EPS, "alpha": 0.025, "steps": 7},
    },
}


def objectives_experiment() -> ExperimentConfig:
    raw = {
        "name": "objectives",
        "data": {"dataset": "digits"},
        "models": [{"name": "thesis-shallow"}],
        "device": "cpu",
        "phases": [
            {"name": "clean", "epochs": 12, "batch_size": 64, "shared": True},
            {"name": "second", "epochs": 6, "batch_size": 64, "objective": "standard"},
        ],
        "evaluation": {
            "train_subset": 0,
            "attack_images": 360,
            "attacks": [PGD_EVAL],
            "phase_end_attacks": [PGD_EVAL],
        },
        "sweep": {
            "points": [
                {"phases.second.objective": objective, "label": name}
                for name, objective in OBJECTIVES.items()
            ]
        },
    }
    config: ExperimentConfig = parse_config(ExperimentConfig, raw, source="test")
    return config


@pytest.fixture(scope="module")
def objectives_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("objectives")
    run_experiment(objectives_experiment(), out, write_report=False)
    return out


def _robust(out: Path, setting: str, phase: str) -> float:
    data = collect(out / "objectives", build_plan(objectives_experiment()))
    (trial,) = data.group(setting, "thesis-shallow")
    evaluation = trial.phases[phase].evaluation
    assert evaluation is not None
    return float(evaluation["worst_case_acc"])


@pytest.mark.parametrize("setting", [name for name in OBJECTIVES if name != "standard"])
def test_objective_trains_and_beats_standard_training_under_pgd(
    objectives_run: Path, setting: str
) -> None:
    run = RunDirectory(objectives_run / "objectives" / f"thesis-shallow-{setting}-s0")
    epochs = [r for r in run.read_metrics() if r["event"] == "epoch" and r["phase"] == "second"]
    assert len(epochs) == 6
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]  # it learns its objective
    assert epochs[-1]["test_acc"] > 0.8  # and keeps classifying clean digits
    standard = _robust(objectives_run, "standard", "second")
    robust = _robust(objectives_run, setting, "second")
    assert robust > standard + 0.1, (setting, robust, standard)


def test_sweep_points_share_one_clean_phase(objectives_run: Path) -> None:
    shared = list((objectives_run / "shared").iterdir())
    assert len(shared) == 1  # one model × one seed; six sweep points start from it
    reference = load_weights(RunDirectory(shared[0]).phase_weights("clean"))
    for setting in OBJECTIVES:
        run = RunDirectory(objectives_run / "objectives" / f"thesis-shallow-{setting}-s0")
        copied = load_weights(run.phase_weights("clean"))
        assert all(torch.equal(copied[k], reference[k]) for k in reference)
        ends = [r for r in run.read_metrics() if r.get("event") == "phase_end"]
        assert [r["phase"] for r in ends] == ["clean", "second"]


def test_shared_start_matches_training_from_scratch(objectives_run: Path, tmp_path: Path) -> None:
    """A trial started from the shared phase ends where training it alone would."""
    (spec,) = [s for s in build_plan(objectives_experiment()).trials if s.point.label == "fgsm_rs"]
    trial = spec.resolve()
    alone = trial.model_copy(
        update={"phases": [p.model_copy(update={"shared": False}) for p in trial.phases]}
    )
    train_trial(alone, tmp_path / "alone")
    started = load_weights(
        RunDirectory(objectives_run / "objectives" / "thesis-shallow-fgsm_rs-s0").final_weights
    )
    scratch = load_weights(RunDirectory(tmp_path / "alone").final_weights)
    assert all(torch.equal(started[k], scratch[k]) for k in scratch)


def digits_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        "thesis-shallow", input_shape=(1, 8, 8), num_classes=10, mean=[0.3], std=[0.37]
    )


def test_warmup_scales_eps_and_step_and_seeds_each_batch() -> None:
    attack = PGD(eps=0.3, alpha=0.03, steps=5, seed=7)
    half = scheduled_attack(attack, 0.5, TrainingStep(epoch=1.0, index=11))
    assert (
        half is not None and half.eps == pytest.approx(0.15) and half.alpha == pytest.approx(0.015)
    )
    assert half.seed == 18
    assert scheduled_attack(attack, 0.0, TrainingStep(epoch=0.0, index=0)) is None
    objective = AdversarialObjective(attack=attack, eps_warmup_epochs=2.0)
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))
    model = digits_model().eval()  # no dropout: two forward passes must agree
    start = objective(model, x, y, TrainingStep(epoch=0.0, index=0))
    clean = F.cross_entropy(model(x), y)
    assert torch.allclose(start.loss, clean)  # ε = 0 at the very start: clean inputs


def test_free_objective_carries_a_projected_perturbation() -> None:
    config = FreeObjectiveConfig(eps=0.05, replays=3)
    objective = build_objective(config)
    assert isinstance(objective, FreeObjective) and objective.replays == 3
    model = digits_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    objective.start_epoch()
    for _ in range(objective.replays):
        output = objective(model, x, y, TrainingStep(epoch=0.5, index=1))
        optimizer.zero_grad()
        output.loss.backward()
        objective.after_backward()
        optimizer.step()
    delta = objective._delta
    assert delta is not None and delta.abs().max() <= 0.05 + 1e-6 and delta.abs().max() > 0
    assert ((x + delta) >= 0).all() and ((x + delta) <= 1).all()
    objective.start_epoch()
    assert objective._delta is None


def test_fgsm_rs_is_one_random_start_step_of_1_25_eps() -> None:
    config = FGSMRSObjectiveConfig(eps="8/255")  # type: ignore[arg-type]
    attack = config.attack.build()
    assert isinstance(attack, PGD) and attack.steps == 1 and attack.random_start
    assert attack.eps == pytest.approx(8 / 255) and attack.alpha == pytest.approx(1.25 * 8 / 255)
    assert config.overfitting_check is not None  # on by default, as Wong et al. recommend


class _NoAttack(PGD):
    """A 'training attack' that returns the clean input: the perfect picture of a defence
    that holds off its own attack and nothing else."""

    def _perturb(self, context, x, y, target):  # type: ignore[no-untyped-def]
        return x.clone()


def test_overfitting_check_stops_the_phase_and_restores_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accuracy under the training attack far above PGD's is flagged; with action=stop the
    phase ends after that epoch with the previous epoch's weights, and the run continues."""
    real_build = build_objective

    def build(config: Any) -> Any:
        objective = real_build(config)
        if isinstance(objective, AdversarialObjective):
            return AdversarialObjective(attack=_NoAttack(eps=0.3, steps=1, alpha=0.3))
        return objective

    monkeypatch.setattr("robustlab.train.trainer.build_objective", build)
    raw = {
        "trial": "co",
        "data": {"dataset": "digits"},
        "model": {"name": "thesis-shallow"},
        "device": "cpu",
        "phases": [
            {"name": "clean", "epochs": 8, "batch_size": 64},
            {
                "name": "fast",
                "epochs": 4,
                "batch_size": 64,
                "objective": {"type": "fgsm_rs", "eps": 0.3},
            },
            {"name": "after", "epochs": 1, "batch_size": 64},
        ],
        "evaluation": {"train_subset": 0, "attack_images": 100},
    }
    config: TrialConfig = parse_config(TrialConfig, raw, source="test")
    run = RunDirectory(tmp_path / "run")
    train_trial(config, run.path)
    records = run.read_metrics()
    fast = [r for r in records if r.get("event") == "epoch" and r["phase"] == "fast"]
    assert len(fast) == 1 and fast[0]["overfitting"]["flagged"]
    assert fast[0]["overfitting"]["gap"] > 0.3
    (stop,) = [r for r in records if r.get("event") == "early_stop"]
    assert stop["phase"] == "fast" and "catastrophic overfitting" in stop["reason"]
    # The weights kept for the phase are those after the clean phase: the epoch was undone.
    assert _same(load_weights(run.phase_weights("fast")), load_weights(run.phase_weights("clean")))
    after = [r for r in records if r.get("event") == "epoch" and r["phase"] == "after"]
    assert [r["global_epoch"] for r in after] == [13]
    assert run.read_results()["early_stops"][0]["epoch"] == 1


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_overfitting_check_is_quiet_on_honest_training(objectives_run: Path) -> None:
    run = RunDirectory(objectives_run / "objectives" / "thesis-shallow-fgsm_rs-s0")
    checks = [r["overfitting"] for r in run.read_metrics() if "overfitting" in r]
    assert len(checks) == 6 and not any(check["flagged"] for check in checks)


def test_objectives_never_leave_gradients_on_the_input_batch() -> None:
    model = digits_model()
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))
    for name, raw in OBJECTIVES.items():
        phase = parse_config(PhaseConfig, {"name": "p", "epochs": 1, "objective": raw}, source=name)
        objective = build_objective(phase.objective)
        before = copy.deepcopy(x)
        output = objective(model, x, y, TrainingStep(epoch=1.0, index=3))
        assert output.loss.requires_grad and output.logits.shape == (8, 10), name
        assert torch.equal(x, before) and x.grad is None, name
