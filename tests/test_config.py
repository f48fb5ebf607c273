from pathlib import Path

import pytest

from robustlab.config import ExperimentConfig, TrialConfig, load_experiment, parse_config
from robustlab.errors import ConfigError
from robustlab.experiments import build_plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def trial_dict(**overrides):
    base = {
        "trial": "t",
        "data": {"dataset": "synthetic"},
        "model": {"name": "thesis-shallow"},
        "phases": [{"name": "clean", "epochs": 2}],
    }
    base.update(overrides)
    return base


def test_valid_trial_gets_defaults() -> None:
    config = parse_config(TrialConfig, trial_dict(), source="test")
    phase = config.phases[0]
    assert phase.objective.type == "standard"
    assert phase.optimizer.type == "adam" and phase.optimizer.lr == 1e-3
    assert config.total_epochs == 2


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"phases": [{"name": "clean", "epochs": 2, "epoch": 3}]}, "phases.0.epoch", "unknown key"),
        ({"phases": [{"name": "clean", "epochs": "many"}]}, "phases.0.epochs", "integer"),
        ({"phases": [{"name": "clean", "epochs": 0}]}, "phases.0.epochs", "greater than"),
        (
            {"phases": [{"name": "c", "epochs": 1, "optimizer": {"lr": -1}}]},
            "phases.0.optimizer.lr",
            "greater than 0",
        ),
        (
            {"phases": [{"name": "c", "epochs": 1, "optimizer": {"type": "rmsprop"}}]},
            "phases.0.optimizer.type",
            "'sgd', 'adam' or 'adamw'",
        ),
        (
            {"phases": [{"name": "c", "epochs": 1, "objective": "magic"}]},
            "phases.0.objective.type",
            "'standard'",
        ),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"data": {}}, "data.dataset", "Field required"),
        ({"phases": []}, "phases", "at least 1"),
    ],
)
def test_invalid_values_name_the_field(change, field, fragment) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(TrialConfig, trial_dict(**change), source="test.yaml")
    message = str(raised.value)
    assert "test.yaml" in message
    assert f"  {field}:" in message
    assert fragment in message


def test_duplicate_phase_names_rejected() -> None:
    phases = [{"name": "a", "epochs": 1}, {"name": "a", "epochs": 1}]
    with pytest.raises(ConfigError, match=r"phases: .*unique; repeated: a"):
        parse_config(TrialConfig, trial_dict(phases=phases), source="x")


def test_yaml_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        load_experiment(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(tmp_path / "missing.yaml")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        "name: x\ndata: {dataset: digits}\nmodels: [{name: m}]\n"
        "phases: [{name: c, epochs: 1}]\nlearning_rate: 3\n"
    )
    with pytest.raises(ConfigError, match="learning_rate: unknown key"):
        load_experiment(unknown)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    config = load_experiment(path)
    assert isinstance(config, ExperimentConfig)
    plan = build_plan(config)  # the kind, its report options and every model build too
    assert plan.trials


def test_experiment_expands_models_by_seeds() -> None:
    config = load_experiment(CONFIGS / "thesis-clean.yaml")
    trials = [spec.resolve() for spec in build_plan(config).trials]
    assert [t.trial for t in trials] == ["thesis-shallow-s0", "thesis-deep-s0"]
    assert all(t.phases[0].epochs == 12 for t in trials)
    assert config.data.dataset == "mnist" and config.data.fallback == ["fashion-mnist"]
