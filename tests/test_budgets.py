"""Budgets that mean something (issue 20): a budget that cannot change the input, or one no
input box can hold, is refused in the Python API, in configs and on the command line, with the
field named, before any work; an attack that changes nothing is never reported as a result."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from robustlab.attacks import ATTACKS, PGD, attack_parameters, build_attack
from robustlab.attacks.cw import CW
from robustlab.attacks.jsma import JSMA
from robustlab.attacks.validation import BudgetError
from robustlab.config import TrialConfig, parse_config
from robustlab.config.attacks import AttackConfig
from robustlab.config.objectives import FGSMRSObjectiveConfig
from robustlab.config.threat import ThreatConfig, resolve_threat
from robustlab.errors import ConfigError
from robustlab.evaluate import evaluate_accuracy, robust_accuracy
from robustlab.train import train_trial
from robustlab.train.objectives import scheduled_attack
from tests.test_cli import robustlab
from tests.trial_factory import synthetic_trial

STEP_FIELDS = ("steps", "iterations", "binary_search_steps")
"""Iterations of an iterative attack: zero of them returns the input unchanged."""
COUNT_FIELDS = ("restarts", "queries", "pixels", "max_pixels", "target_classes")
"""Counts of starts, queries or changed pixels: zero of them changes nothing."""
WITH_EPS = [name for name in ATTACKS.names() if "eps" in attack_parameters(name)]
LINF_ATTACKS = [
    name
    for name in WITH_EPS
    if attack_parameters(name).get("norm", ATTACKS.get(name).THREAT) == "linf"
]


def owner(name: str) -> str:
    return ATTACKS.get(name).__name__


class Linear(nn.Module):
    """A fixed linear classifier on flattened inputs that counts its forward calls."""

    def __init__(self, features: int, classes: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, features, generator=_seeded()))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x.flatten(1) @ self.weight.t()


def _seeded() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def batch(features: int = 16, count: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    side = int(features**0.5)
    x = torch.rand(count, 1, side, side, generator=_seeded())
    return x, torch.zeros(count, dtype=torch.long)


# --- The Python API: every attack of the registry, every budget field ------------------------


def test_every_registered_attack_has_a_checked_budget() -> None:
    """A new attack must join these tests: each one has an ε, a step count or a pixel count."""
    budget_fields = {"eps", "gamma", *STEP_FIELDS, *COUNT_FIELDS}
    for name in ATTACKS.names():
        assert budget_fields & set(attack_parameters(name)), name


@pytest.mark.parametrize("name", LINF_ATTACKS)
def test_linf_eps_above_one_is_refused(name: str) -> None:
    """Table row: L∞ ε = 2.0 was accepted (and the model collapsed to 9.95%)."""
    with pytest.raises(ValueError, match=rf"{owner(name)}\.eps must be <= 1 for an L∞ budget"):
        ATTACKS.get(name)(eps=2.0)
    with pytest.raises(ConfigError, match=rf"attack '{name}': {owner(name)}\.eps must be <= 1"):
        build_attack(name, eps=5)
    assert build_attack(name, eps=1.0).budget == 1.0  # the whole box is a legal, if odd, ball


@pytest.mark.parametrize("name", WITH_EPS)
@pytest.mark.parametrize("eps", [0, 0.0, -0.1, float("inf"), float("nan")])
def test_eps_that_cannot_change_the_input_is_refused(name: str, eps: float) -> None:
    """ε = 0 is refused rather than reported as "no attack": a number measured with it is
    the clean accuracy under another name. Negative and non-finite radii are refused too."""
    with pytest.raises(BudgetError, match=rf"{owner(name)}\.eps must be"):
        ATTACKS.get(name)(eps=eps)


def fields_of(names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(attack, field) for every registered attack that has one of ``names``."""
    return [
        (attack, field)
        for attack in ATTACKS.names()
        for field in names
        if field in attack_parameters(attack)
    ]


@pytest.mark.parametrize(("name", "field"), fields_of(STEP_FIELDS))
def test_fewer_than_one_step_is_refused(name: str, field: str) -> None:
    """Table row: steps: 0 was accepted and reported as PGD-0, equal to clean accuracy."""
    for value in (0, -1):
        with pytest.raises(BudgetError, match=rf"{owner(name)}\.{field} must be >= 1"):
            ATTACKS.get(name)(**{field: value})
    with pytest.raises(BudgetError, match=rf"{owner(name)}\.{field} must be an integer"):
        ATTACKS.get(name)(**{field: 2.5})
    assert ATTACKS.get(name)(**{field: 1}) is not None


@pytest.mark.parametrize(("name", "field"), fields_of(COUNT_FIELDS))
def test_counts_below_one_are_refused(name: str, field: str) -> None:
    with pytest.raises(BudgetError, match=rf"{owner(name)}\.{field} must be >= "):
        ATTACKS.get(name)(**{field: 0})


def test_l0_budgets_that_change_nothing_are_refused() -> None:
    with pytest.raises(ValueError, match=r"JSMA\.gamma must be > 0"):
        JSMA(gamma=0.0)
    with pytest.raises(BudgetError, match=r"JSMA\.max_pixels must be >= 2"):
        JSMA(max_pixels=1)  # JSMA moves features in pairs: one feature is no budget
    x, y = batch(16)
    with pytest.raises(BudgetError, match=r"JSMA\.gamma = 0\.05 allows 0 of 16 features"):
        JSMA(gamma=0.05).run(Linear(16), x, y, target=torch.ones_like(y))


def test_minimal_perturbation_eps_is_optional_but_positive() -> None:
    assert CW().budget is None and CW(eps=3.0).budget == 3.0  # L2: above 1 is fine
    with pytest.raises(BudgetError, match=r"CW\.eps must be > 0"):
        CW(eps=0.0)


def test_dataclass_replace_is_checked_too() -> None:
    """Adversarial training scales ε with ``dataclasses.replace``: the copy is validated."""
    import dataclasses

    with pytest.raises(BudgetError, match=r"PGD\.eps must be <= 1"):
        dataclasses.replace(PGD(eps=0.3), eps=1.5)


def test_eps_warmup_still_trains_on_clean_inputs_at_zero() -> None:
    """ε warm-up starts at 0: the trainer skips the attack then instead of building ε = 0."""
    attack = PGD(eps=0.3, alpha=0.01, steps=3)
    assert scheduled_attack(attack, 0.0, None) is None
    half = scheduled_attack(attack, 0.5, None)
    assert isinstance(half, PGD) and half.eps == pytest.approx(0.15)


# --- Radii larger than the input box: known only with the input shape -------------------------


@pytest.mark.parametrize(
    ("norm", "features", "eps", "bound"),
    [("l2", 16, 4.5, r"√16 = 4"), ("l1", 16, 17.0, r"at most 16\)")],
)
def test_radius_beyond_the_box_diameter_is_refused(
    norm: str, features: int, eps: float, bound: str
) -> None:
    """The L2 diameter of [0, 1]^d is √d and the L1 one d: a larger ε constrains nothing."""
    x, y = batch(features)
    model = Linear(features)
    attack = PGD(eps=eps, steps=2, norm=norm)  # type: ignore[arg-type]
    with pytest.raises(
        BudgetError, match=rf"PGD\.eps = {eps:g} is larger than any {norm}.*{bound}"
    ):
        attack.run(model, x, y)
    assert model.calls == 0  # refused before the model was queried
    inside = PGD(eps=eps, steps=2, norm=norm)(Linear(64), *batch(64))  # type: ignore[arg-type]
    assert inside.shape == (6, 1, 8, 8)


def test_minimal_perturbation_radius_beyond_the_box_is_refused() -> None:
    x, y = batch(16)
    with pytest.raises(BudgetError, match=r"CW\.eps = 5 is larger than any l2 distance"):
        CW(eps=5.0, steps=2, binary_search_steps=1).run(Linear(16), x, y)


def test_per_example_budgets_beyond_the_box_are_refused() -> None:
    x, y = batch(16)
    radii = torch.full((6,), 0.1)
    radii[3] = 1.5
    with pytest.raises(BudgetError, match=r"largest per-example budget = 1\.5"):
        PGD(eps=1.0, steps=2).run(Linear(16), x, y, budgets=radii)


def test_robust_accuracy_checks_every_budget_before_any_attack_runs() -> None:
    x, y = batch(16)
    model = Linear(16)
    attacks = [PGD(eps=0.1, steps=2), PGD(eps=100.0, steps=2, norm="l2")]
    with pytest.raises(BudgetError, match=r"PGD\.eps = 100"):
        robust_accuracy(model, (x, y), attacks)
    assert model.calls == 0


@pytest.mark.parametrize("size", [0, -1])
def test_evaluations_refuse_batch_sizes_below_one(size: int) -> None:
    x, y = batch(16)
    with pytest.raises(ConfigError, match=rf"batch_size must be an integer >= 1, got {size}"):
        robust_accuracy(Linear(16), (x, y), [PGD(eps=0.1, steps=1)], batch_size=size)
    with pytest.raises(ConfigError, match=rf"batch_size must be an integer >= 1, got {size}"):
        evaluate_accuracy(Linear(16), x, y, batch_size=size)


# --- Configs: attacks, training attacks, objectives, the threat ------------------------------


def phase(objective: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "adversarial", "epochs": 1, "objective": objective, **extra}


def refused(raw_phase: dict[str, Any], *fragments: str) -> None:
    with pytest.raises(ConfigError) as caught:
        synthetic_trial(phases=[raw_phase])
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    ("objective", "fragments"),
    [
        (
            {"type": "adversarial", "attack": {"name": "pgd", "eps": 2.0}},
            ("objective.adversarial.attack", "PGD.eps must be <= 1"),
        ),
        (
            {"type": "adversarial", "attack": {"name": "fgsm", "eps": 0}},
            ("objective.adversarial.attack", "FGSM.eps must be > 0"),
        ),
        (
            {"type": "adversarial", "attack": {"name": "pgd", "steps": 0}},
            ("objective.adversarial.attack", "PGD.steps must be >= 1"),
        ),
        ({"type": "fgsm_rs", "eps": 2.0}, ("objective.fgsm_rs", "fgsm_rs objective: eps must")),
        ({"type": "fgsm_rs", "eps": 0}, ("objective.fgsm_rs", "eps must be > 0")),
        ({"type": "fgsm_rs", "alpha": 0}, ("objective.fgsm_rs", "alpha must be > 0")),
        ({"type": "free", "eps": "300/255"}, ("objective.free", "free objective: eps must be <=")),
        ({"type": "free", "step": 0}, ("objective.free", "step must be > 0")),
        (
            {"type": "trades", "attack": {"name": "pgd-kl", "eps": 1.5}},
            ("objective.trades.attack", "PGDKL.eps must be <= 1"),
        ),
    ],
)
def test_training_attack_budgets_are_refused(
    objective: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    """Table rows: L∞ ε = 2.0 and steps: 0 for a training attack were accepted."""
    refused(phase(objective), *fragments)


def test_phase_end_attack_with_no_steps_is_refused() -> None:
    """Table row: steps: 0 in a phase-end PGD was reported as PGD-0."""
    evaluation = {"phase_end_attacks": [{"name": "pgd", "eps": 0.1, "steps": 0}]}
    refused(
        {"name": "clean", "epochs": 1, "evaluation": evaluation},
        "phase_end_attacks",
        "PGD.steps must be >= 1",
    )


def test_l2_objective_budgets_may_exceed_one() -> None:
    config = synthetic_trial(phases=[phase({"type": "fgsm_rs", "eps": 2.0, "norm": "l2"})])
    assert config.phases[0].objective.eps == 2.0  # type: ignore[union-attr]


def test_threat_eps_reaches_the_check_through_inheritance() -> None:
    """An experiment's ε reaches every attack that states none, and is judged there."""
    attack = AttackConfig.model_validate({"name": "pgd", "steps": 3})
    with pytest.raises(ValueError, match=r"PGD\.eps must be <= 1"):
        attack.with_threat(resolve_threat(ThreatConfig(eps=2.0), None))
    objective = FGSMRSObjectiveConfig()
    with pytest.raises(ValueError, match="fgsm_rs objective: eps must be > 0"):
        objective.with_threat(resolve_threat(ThreatConfig(eps=0), None))


def test_calibrated_eps_keeps_working() -> None:
    """``threat: {eps: calibrated}``: attacks keep their own ε until calibration finds one,
    then take it, and a calibrated value is judged like any other."""
    threat = ThreatConfig(eps="calibrated")  # type: ignore[arg-type]
    attack = AttackConfig.model_validate({"name": "pgd", "steps": 3})
    assert attack.with_threat(resolve_threat(threat, None)) is attack
    assert attack.with_threat(resolve_threat(threat, 0.21)).build().budget == 0.21
    objective = FGSMRSObjectiveConfig().with_threat(resolve_threat(threat, 0.21))
    assert objective.eps == 0.21 and objective.attack.build().budget == 0.21


def test_attack_configs_in_trials_name_the_field() -> None:
    raw = {
        "trial": "t",
        "data": {"dataset": "synthetic"},
        "model": {"name": "thesis-shallow"},
        "phases": [{"name": "clean", "epochs": 1}],
        "evaluation": {"attacks": [{"name": "square", "eps": 0.1, "queries": 0}]},
    }
    with pytest.raises(ConfigError, match=r"evaluation\.attacks\.0.*Square\.queries must be >= 1"):
        parse_config(TrialConfig, raw, source="test")


# --- The command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch run on the synthetic 8×8 dataset (input of 64 values)."""
    path = tmp_path_factory.mktemp("budgets") / "run"
    config = synthetic_trial(phases=[{"name": "clean", "epochs": 1, "batch_size": 64}])
    train_trial(config, path)
    return path


@pytest.fixture
def cli() -> Iterator[CliRunner]:
    from robustlab.cli.main import app  # noqa: F401 (registers every command)

    yield CliRunner()


def invoke_refused(runner: CliRunner, *args: str) -> str:
    """Run a command in process; it must end in a ConfigError (the CLI's exit 2)."""
    from robustlab.cli.main import app

    result = runner.invoke(app, list(args))
    assert isinstance(result.exception, ConfigError), (result.exception, result.output)
    return str(result.exception)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("attack", "--eps", "2"), r"PGD\.eps must be <= 1 for an L∞ budget, got 2"),
        (("attack", "--steps", "0"), r"PGD\.steps must be >= 1, got 0"),
        (("attack", "--n", "-3"), r"--n \(test images to attack\) must be an integer >= 1, got -3"),
        (("attack", "--n", "0"), r"--n \(test images to attack\) must be an integer >= 1, got 0"),
        (("attack", "--batch-size", "0"), r"--batch-size \(images per attack batch\) .* got 0"),
        (("attack", "--norm", "l2", "--eps", "9"), r"PGD\.eps = 9 is larger .* √64 = 8"),
        (("attack", "--attack", "square", "-p", "queries=0"), r"Square\.queries must be >= 1"),
        (("eval", "--attack", "fgsm", "--eps", "5"), r"FGSM\.eps must be <= 1"),
        (("eval", "--attack", "pgd", "--eps", "0"), r"PGD\.eps must be > 0"),
        (("eval", "--attack", "pgd", "--n", "0"), r"--n \(test images to attack\)"),
        (("eval", "--batch-size", "0"), r"--batch-size \(evaluation batch size\)"),
        (("calibrate", "--steps", "0"), r"PGD\.steps must be >= 1"),
        (("calibrate", "--n", "-3"), r"--n \(test images to calibrate on\)"),
        (("calibrate", "--high", "2"), r"--high \(largest L∞ ε searched\) must be in \(0, 1\]"),
    ],
)
def test_cli_refuses_budgets_before_any_work(
    cli: CliRunner, trained_run: Path, args: tuple[str, ...], message: str
) -> None:
    """Table rows: `attack --eps 2`, `eval --attack fgsm --eps 5`, `attack --steps 0` were
    accepted; `attack --n -3` ran on 357 images; `--n 0`, `--batch-size 0` tracebacked."""
    command, *options = args
    text = invoke_refused(cli, command, str(trained_run), *options)
    assert re.search(message, text), text
    assert not (trained_run / "attacks").exists()  # no result was written


def test_cli_budget_refusal_is_one_line_and_exit_2(trained_run: Path, tmp_path: Path) -> None:
    """As a user sees it: no traceback, the field named, exit status 2."""
    result = robustlab("attack", str(trained_run), "--n", "-3", cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    assert "--n (test images to attack) must be an integer >= 1, got -3" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (trained_run / "attacks").exists()


def test_attacks_in_budget_still_run(trained_run: Path, tmp_path: Path) -> None:
    from robustlab.evaluate.on_run import attack_run
    from robustlab.store.runs import RunDirectory

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)  # the refusal tests check that nothing is written there
    outcome = attack_run(
        RunDirectory(run),
        [PGD(eps=1.0, steps=1), build_attack("pgd", eps=8.0, norm="l2", steps=1)],
        count=5,
        batch_size=2,
        device=torch.device("cpu"),
    )
    assert outcome.report.count == 5 and len(outcome.report.attacks) == 2
    for count, size in ((0, 2), (-3, 2), (5, 0)):
        with pytest.raises(ConfigError, match=r"(count|batch_size) \(.*\) must be an integer >= 1"):
            attack_run(
                RunDirectory(run),
                [PGD(eps=0.1, steps=1)],
                count=count,
                batch_size=size,
                device=torch.device("cpu"),
            )


def test_plan_refuses_an_l2_budget_beyond_the_datasets_inputs(tmp_path: Path) -> None:
    """An L2 ε above √d needs the input shape, which a trial's config alone does not know: the
    plan checks it, before the runner claims any folder."""
    from robustlab.config import load_experiment
    from robustlab.experiments import build_plan

    def experiment(eps: float) -> Path:
        path = tmp_path / f"l2-{eps}.yaml"
        path.write_text(
            "name: l2\ndata: {dataset: digits}\nmodels: [{name: convnet}]\n"
            "phases:\n  - name: adversarial\n    epochs: 1\n"
            "    objective: {type: adversarial, attack: {name: pgd, steps: 2, norm: l2, "
            f"eps: {eps}}}}}\n"
        )
        return path

    assert build_plan(load_experiment(experiment(7.5))).trials  # √64 = 8 on 8×8 digits
    with pytest.raises(ConfigError, match=r"trial convnet-s0, phase 'adversarial': .*√64 = 8"):
        build_plan(load_experiment(experiment(9.0)))
