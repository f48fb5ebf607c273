"""Memorisation capacity (``robustlab capacity``): grows with parameter count on MLPs,
repeats agree, the robust analogue is below it, a killed search resumes from its file, and
budgets or brackets that cannot work are refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.config import parse_config
from robustlab.errors import ConfigError
from robustlab.experiments import capacity as capacity_module
from robustlab.experiments.capacity import CapacitySettings, measure_capacity
from robustlab.experiments.capacity import search as search_module
from robustlab.experiments.capacity.fitting import epoch_budget

BUDGET = {
    "epochs": 150,
    "batch_size": 64,
    "lr": 0.01,
    "min_images": 5,
    "max_images": 1000,
    "resolution": 0.2,
}


def mlp_experiment(tmp_path: Path, widths: list[int], **extra: Any) -> Path:
    """An experiment config whose models are one-hidden-layer MLPs on the embedded digits."""
    raw = {
        "name": "mlp-capacity",
        "data": {"dataset": "digits"},
        "device": "cpu",
        "models": [
            {"name": "mlp", "options": {"depth": 1, "width": w}, "label": f"mlp{w}"} for w in widths
        ],
        "threat": {"eps": 0.1},
        "phases": [
            {
                "name": "adversarial",
                "epochs": 1,
                "objective": {"type": "adversarial", "attack": {"name": "pgd", "steps": 3}},
            }
        ],
        **extra,
    }
    path = tmp_path / "mlp-capacity.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def settings(**changes: Any) -> CapacitySettings:
    return parse_config(CapacitySettings, {**BUDGET, **changes}, source="test")


def test_memorisation_capacity_grows_with_parameters_and_repeats_agree(tmp_path: Path) -> None:
    path, results = measure_capacity(
        mlp_experiment(tmp_path, [8, 32]), settings(repeats=2), out=tmp_path
    )
    small, large = results
    assert small["parameters"] < large["parameters"]
    assert large["capacity_mean"] > 3 * small["capacity_mean"]  # measured: about 55 and 370
    for result in results:
        found = [repeat["capacity"] for repeat in result["repeats"]]
        assert max(found) <= 1.5 * min(found)  # the stated spread: within 50% of each other
        for repeat in result["repeats"]:  # the bracket is tight: fitted below, not above
            fitted = {a["images"]: a["fitted"] for a in repeat["attempts"]}
            assert fitted[repeat["capacity"]]
            assert not fitted[repeat["upper"]]
            assert repeat["upper"] <= repeat["capacity"] * 1.2 + 1
    stored = json.loads(path.read_text())
    assert stored["settings"]["epochs"] == BUDGET["epochs"]  # the budget is recorded
    assert path == tmp_path / "mlp-capacity" / "capacity.json"


def test_robust_capacity_takes_the_training_attacks_eps_and_is_recorded(
    tmp_path: Path,
) -> None:
    source = mlp_experiment(tmp_path, [16])
    _, (robust,) = measure_capacity(
        source, settings(measure="robust", repeats=1, epochs=60), out=tmp_path
    )
    assert robust["attack"]["eps"] == 0.1  # the training attack's ε, from the config
    assert 5 <= robust["capacity_mean"] < 1000


def test_a_killed_search_resumes_without_redoing_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = mlp_experiment(tmp_path, [4])
    _, first = measure_capacity(source, settings(repeats=1), out=tmp_path)

    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a stored attempt was trained again")

    monkeypatch.setattr(search_module, "attempt", no_training)
    _, again = measure_capacity(source, settings(repeats=1), out=tmp_path)
    assert again == first
    with pytest.raises(ConfigError, match="other settings; they differ in epochs"):
        measure_capacity(source, settings(repeats=1, epochs=10), out=tmp_path)


def test_a_budget_that_cannot_fit_the_smallest_set_is_refused(tmp_path: Path) -> None:
    source = mlp_experiment(tmp_path, [2])
    with pytest.raises(ConfigError, match=r"even the smallest set \(min_images=200\).*epochs=1"):
        measure_capacity(source, settings(epochs=1, lr=1e-4, min_images=200), out=tmp_path)


def test_a_step_floor_gives_small_sets_more_epochs_and_large_sets_none() -> None:
    floored = settings(epochs=10, batch_size=64, min_steps=100)
    assert epoch_budget(floored, 20) == 100  # one batch per epoch: 100 epochs
    assert epoch_budget(floored, 640) == 10  # ten batches per epoch: the epochs suffice
    assert epoch_budget(floored, 300) == 20  # five batches per epoch
    assert epoch_budget(settings(epochs=10), 20) == 10  # no floor
    with pytest.raises(ConfigError, match="min_steps"):
        settings(min_steps=0)


def test_a_refusal_names_the_step_floor_it_spent(tmp_path: Path) -> None:
    source = mlp_experiment(tmp_path, [2])
    floored = settings(epochs=1, lr=1e-4, min_images=200, min_steps=8)  # 4 batches per epoch
    with pytest.raises(ConfigError, match=r"within 2 epochs \(epochs=1, min_steps=8\)"):
        measure_capacity(source, floored, out=tmp_path)


def test_bad_brackets_are_refused_before_any_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capacity_module, "measure_target", None)  # nothing may train
    with pytest.raises(ConfigError, match=r"min_images .* must be below max_images"):
        settings(min_images=500, max_images=100)
    with pytest.raises(ConfigError, match="max_images: 5000 asked for, but digits has 1437"):
        measure_capacity(mlp_experiment(tmp_path, [2]), settings(max_images=5000), out=tmp_path)
    with pytest.raises(ConfigError, match="threshold"):
        settings(threshold=1.5)


def test_capacity_command_prints_the_table(tmp_path: Path) -> None:
    source = mlp_experiment(tmp_path, [8])
    result = CliRunner().invoke(
        app,
        [
            "capacity",
            str(source),
            "--out",
            str(tmp_path),
            "--repeats",
            "1",
            "--epochs",
            "150",
            "--lr",
            "0.01",
            "--batch-size",
            "64",
            "--min-images",
            "10",
            "--max-images",
            "1000",
            "--resolution",
            "0.2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "memorisation capacity" in result.output
    assert "mlp depth=1 width=8" in result.output
