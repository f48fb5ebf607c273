"""The defenses kind end to end (configs/defenses-quick.yaml shortened): every trial trained,
then its defense evaluated under the naive and adaptive attacks with the checks, the report
showing both columns, a re-run redoing nothing; and bad configs refused before any work."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.config import ExperimentConfig, parse_config
from robustlab.errors import ConfigError
from robustlab.experiments import run_experiment
from robustlab.experiments.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]


def quick(**report: Any) -> dict[str, Any]:
    """configs/defenses-quick.yaml, shortened: 3 + 1 epochs, few steps, 60 images."""
    raw: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "defenses-quick.yaml").read_text())
    raw["phases"][0]["epochs"] = 3
    for point in raw["sweep"]["points"]:
        for phase in point.get("phases", []):
            phase["epochs"] = 3 if phase["name"] == "standard" else 1
            if "objective" in phase and "attack" in phase["objective"]:
                phase["objective"]["attack"]["steps"] = 2
    raw["device"] = "cpu"
    raw["report"].update(
        {
            "images": 60,
            "naive": {"name": "pgd", "steps": 5},
            "adaptive": {"name": "pgd", "steps": 10, "loss": "cw"},
            "eot": 2,
            "checks": {"images": 30, "square_queries": 30},
            **report,
        }
    )
    return raw


def experiment(raw: dict[str, Any]) -> ExperimentConfig:
    return parse_config(ExperimentConfig, raw, source="test")


def test_defenses_experiment_reports_naive_and_adaptive_with_checks(tmp_path: Path) -> None:
    config = experiment(quick())
    result = run_experiment(config, tmp_path)
    folder = result.directory
    evaluations = {}
    for trial in ("undefended", "jpeg", "logit-noise", "pgd-at"):
        path = folder / f"convnet-{trial}-s0" / "defense-evaluation.json"
        evaluations[trial] = json.loads(path.read_text())
    jpeg = evaluations["jpeg"]
    assert jpeg["adaptive"]["attack"]["gradients"] == "BPDA"
    assert evaluations["logit-noise"]["adaptive"]["attack"]["gradients"] == "EOT×2"
    assert evaluations["undefended"]["adaptive"]["attack"]["gradients"] == "plain gradients"
    for evaluation in evaluations.values():
        names = [check["name"] for check in evaluation["naive"]["checks"]]
        assert {"gradients", "unbounded", "more steps", "black box"} <= set(names)
        # the adaptive figure is the worst case over both attacks
        assert evaluation["adaptive"]["robust_acc"] <= evaluation["naive"]["robust_acc"]
    assert "gradients" in jpeg["naive"]["flagged"]  # the codec hides every gradient
    transfer = [c for c in evaluations["pgd-at"]["naive"]["checks"] if c["name"] == "transfer"]
    assert transfer, "the undefended model is the transfer surrogate of every other defense"

    report = (folder / "report" / "report.md").read_text()
    assert "naive attack" in report and "adaptive attack" in report
    assert "Sanity checks" in report and "naive-vs-adaptive.png" in report

    # robustlab eval on a defended trial: attacked as deployed, adaptively, with the checks
    shown = CliRunner().invoke(
        app,
        ["eval", str(folder / "convnet-jpeg-s0"), "--attack", "pgd", "--eps", "0.1", "--n", "30"],
        env={"COLUMNS": "300"},
    )
    assert shown.exit_code == 0, shown.output
    assert "jpeg" in shown.output and "BPDA" in shown.output
    assert "sanity checks" in shown.output and "unbounded" in shown.output
    naive = CliRunner().invoke(
        app,
        [
            "eval",
            str(folder / "convnet-jpeg-s0"),
            "--attack",
            "pgd",
            "--eps",
            "0.1",
            "--n",
            "30",
            "--naive",
        ],
        env={"COLUMNS": "300"},
    )
    assert naive.exit_code == 0, naive.output
    assert "gradients" in naive.output.split("sanity checks")[0]  # flagged beside the figure

    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*/defense-evaluation.json")}
    run_experiment(config, tmp_path)  # a re-run evaluates nothing again
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/defense-evaluation.json")} == stamps
    assert jpeg["settings"]["images"] == 60 and jpeg["settings"]["naive"]["steps"] == 5

    # changed report settings: the stored evaluations are refused before any work, not reused
    changed = experiment(quick(images=50, naive={"name": "pgd", "steps": 7}))
    with pytest.raises(ConfigError, match=r"other report settings.*images.*naive\.steps"):
        run_experiment(changed, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/defense-evaluation.json")} == stamps


def _refused(raw: dict[str, Any], match: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=match):
        build_plan(experiment(raw))


def test_an_override_for_a_defense_that_does_not_exist_is_refused() -> None:
    _refused(quick(overrides={"jepg": {"gradients": {"bpda": True}}}), r"report\.overrides\.jepg")


def test_bpda_on_a_differentiable_defense_is_refused() -> None:
    raw = quick(overrides={"logit-noise": {"gradients": {"bpda": True}}})
    _refused(raw, r"overrides\.logit-noise\.gradients\.bpda")


def test_a_defense_that_does_not_fit_the_images_is_refused() -> None:
    raw = quick()
    raw["sweep"]["points"][1]["model.defenses"] = [{"name": "median", "size": 12}]
    _refused(raw, r"trial convnet-jpeg-s0: model\.defenses\.0: .*size")


def test_a_detector_threshold_out_of_range_is_refused() -> None:
    raw = quick()
    raw["sweep"]["points"][1]["model.defenses"] = [
        {"name": "feature-squeezing", "false_positive_rate": 1.5}
    ]
    _refused(raw, "false_positive_rate")


def test_an_unknown_defense_is_refused() -> None:
    raw = quick()
    raw["sweep"]["points"][1]["model.defenses"] = [{"name": "jpg"}]
    _refused(raw, "unknown defense 'jpg'")


def test_a_missing_surrogate_is_refused() -> None:
    _refused(quick(surrogate="plain"), r"report\.surrogate")


def test_a_calibrated_threat_is_refused() -> None:
    raw = copy.deepcopy(quick())
    raw["threat"] = {"eps": "calibrated"}
    raw["calibration"] = {"after_phase": "standard"}
    _refused(raw, "not calibrated")
