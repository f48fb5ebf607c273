"""Unbounded targeted ILCM (perceptual alignment, thesis Ch. 4.2): images, files, CLI errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from robustlab.cli.main import app
from robustlab.config import TrialConfig, parse_config
from robustlab.errors import ConfigError, RobustlabError
from robustlab.evaluate.perceptual import (
    compared_models,
    perceptual_alignment,
    toward_every_class,
    unbounded_attack,
)
from robustlab.store.runs import RunDirectory
from robustlab.train import train_trial
from tests.conftest import TrainedSubject

pytestmark = pytest.mark.usefixtures("one_thread")  # 2 threads on busy cores: 10-40× slower

STEPS, ALPHA = 30, 0.05
"""Short but unbounded: 30 steps of 0.05 can still carry a pixel across the box."""


@pytest.fixture(scope="session")
def two_phase_run(model_cache: Path) -> RunDirectory:
    """thesis-shallow on digits: 10 clean epochs, then 3 of PGD-5 adversarial training at
    ε = 0.2 (trained once into pytest's cache, like the conftest models)."""
    raw = {
        "trial": "digits-shallow-two-phase-v1",
        "data": {"dataset": "digits"},
        "model": {"name": "thesis-shallow"},
        "device": "cpu",
        "phases": [
            {"name": "clean", "epochs": 10, "batch_size": 64},
            {
                "name": "adversarial",
                "epochs": 3,
                "batch_size": 64,
                "objective": {
                    "type": "adversarial",
                    "attack": {"name": "pgd", "eps": 0.2, "steps": 5},
                },
            },
        ],
        "evaluation": {"train_subset": 0, "attacks": []},
    }
    config: TrialConfig = parse_config(TrialConfig, raw, source="test_ilcm_unbounded")
    run = RunDirectory(model_cache / "digits-shallow-two-phase-v1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_trial(config, run.path, resume=True)
    except (RobustlabError, RuntimeError):
        shutil.rmtree(run.path, ignore_errors=True)
        train_trial(config, run.path)
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.fixture(scope="session")
def one_phase_run(digits_model: TrainedSubject, model_cache: Path) -> RunDirectory:
    """The conftest digits model's run: a single (clean) phase."""
    return RunDirectory(model_cache / "digits-shallow-v1")


def test_images_toward_every_class_reach_their_targets(digits_model: TrainedSubject) -> None:
    x, _ = digits_model.batch(3)
    attack = unbounded_attack(STEPS, ALPHA)
    images, predictions = toward_every_class(digits_model.model, attack, x, 10)
    assert images.shape == (3, 10, 1, 8, 8) and predictions.shape == (3, 10)
    assert images.min() >= 0 and images.max() <= 1
    assert attack.budget == 1.0  # the L∞ ball of radius 1 is the whole box
    reached = (predictions == torch.arange(10)).float().mean().item()
    assert reached >= 0.9, reached


def test_writes_figure_and_json_for_both_phases(two_phase_run: RunDirectory) -> None:
    outcome = perceptual_alignment(
        two_phase_run, count=2, steps=STEPS, alpha=ALPHA, device=torch.device("cpu")
    )
    assert [entry.images.shape for entry in outcome.models] == [(2, 10, 1, 8, 8)] * 2
    standard, robust = outcome.models
    assert standard.label == "after phase 'clean'" and robust.label == "final"
    assert standard.weights.endswith("phase-clean.safetensors")
    assert robust.weights.endswith("model.safetensors")
    assert not torch.equal(standard.images, robust.images)
    assert outcome.figure_file is not None and outcome.figure_file.stat().st_size > 0
    assert outcome.figure_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert outcome.results_file.parent == two_phase_run.path / "attacks"
    record = json.loads(outcome.results_file.read_text())
    assert record["images"] == 2 and record["attack"]["eps"] == 1.0
    assert record["figure"] == outcome.figure_file.name
    for written, entry in zip(record["models"], outcome.models, strict=True):
        assert len(written["per_target"]) == 10
        assert [t["success"] for t in written["per_target"]] == entry.success().tolist()
        assert written["mean_l2"] == pytest.approx(float(entry.mean_l2(outcome.starts).mean()))
        assert written["success"] >= 0.9  # both models: unbounded means (almost) always


def test_one_phase_run_needs_compare(
    one_phase_run: RunDirectory, two_phase_run: RunDirectory
) -> None:
    with pytest.raises(ConfigError, match=r"has one phase.*--compare OTHER_RUN_DIR"):
        compared_models(one_phase_run, torch.device("cpu"))
    first, second = compared_models(one_phase_run, torch.device("cpu"), two_phase_run)
    assert first.label == "digits-shallow-v1: final"
    assert second.label == "digits-shallow-two-phase-v1: final"


def invoke(*args: str) -> tuple[int, str]:
    """The CLI in process; a RobustlabError comes back as its message (main prints it)."""
    result = CliRunner().invoke(app, ["attack", *args])
    if isinstance(result.exception, RobustlabError):
        return 2, str(result.exception)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attack", "pgd"], "--unbounded draws targeted ILCM images: use --attack ilcm"),
        (["--attack", "ilcm", "--eps", "0.3"], "--unbounded sets ε = 1.*drop --eps"),
        (["--attack", "ilcm", "--loss", "cw"], "drop --loss"),
        (["--attack", "ilcm"], "has one phase.*--compare OTHER_RUN_DIR"),
        (["--attack", "ilcm", "--n", "0"], r"--n .*must be an integer >= 1"),
    ],
)
def test_cli_errors_name_the_flag(
    one_phase_run: RunDirectory, args: list[str], message: str
) -> None:
    code, text = invoke(str(one_phase_run.path), "--unbounded", *args)
    assert code == 2 and re.search(message, " ".join(text.split())), text


def test_cli_compare_needs_unbounded(one_phase_run: RunDirectory) -> None:
    code, text = invoke(str(one_phase_run.path), "--compare", str(one_phase_run.path))
    assert code == 2 and "add --unbounded" in text


def test_cli_draws_two_models(two_phase_run: RunDirectory) -> None:
    code, text = invoke(
        str(two_phase_run.path), "--attack", "ilcm", "--unbounded", "--save-examples",
        "--steps", str(STEPS), "--alpha", str(ALPHA), "--n", "1", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, text
    label = f"ilcm-unbounded-steps{STEPS}-alpha{ALPHA:g}-n1-seed0"
    assert (two_phase_run.path / "attacks" / f"{label}.png").exists()
    assert (two_phase_run.path / "attacks" / f"{label}.json").exists()
    assert "results:" in text and "examples:" in text
