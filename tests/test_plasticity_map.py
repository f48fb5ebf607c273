"""The plasticity-map kind end to end (configs/plasticity-map-quick.yaml shortened): every
trial trained and probed (robust fit, pruning, quantisation, distillation), the report with
heatmaps, the equal-size comparison, the fit and the verdicts; a re-run redoing nothing; the
fit itself on numbers with a known answer; and bad configs refused before any work."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from benchmarks.distillation_strength import check_trial, direct_comparison

from robustlab.config import AttackConfig, ExperimentConfig, ModelConfig, parse_config
from robustlab.errors import ConfigError
from robustlab.evaluate.robust import robust_accuracy
from robustlab.experiments import run_experiment
from robustlab.experiments.distillation_probe import load_student, student_model
from robustlab.experiments.kinds.plasticity.cells import Cell, grid_points
from robustlab.experiments.kinds.plasticity.fit import (
    depth_verdict,
    fit_measure,
    iso_parameter_rows,
)
from robustlab.experiments.plan import build_plan
from robustlab.experiments.reporting import build_report
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory
from robustlab.train.inputs import load_trial_data

ROOT = Path(__file__).resolve().parents[1]


def quick(**report: Any) -> dict[str, Any]:
    """configs/plasticity-map-quick.yaml, shortened: 2 + 1 epochs, one seed, few steps."""
    raw: dict[str, Any] = yaml.safe_load(
        (ROOT / "configs" / "plasticity-map-quick.yaml").read_text()
    )
    raw["seeds"] = [0]
    raw["jobs"] = 1
    raw["device"] = "cpu"
    raw["phases"][0]["epochs"] = 2
    raw["phases"][1]["epochs"] = 1
    raw["phases"][1]["objective"]["attack"]["steps"] = 2
    raw["evaluation"]["phase_end_attacks"] = [{"name": "pgd", "steps": 5}]
    raw["report"]["robust_attack"] = "pgd"
    raw["report"].update(
        {
            "fit_images": 200,
            "compression": {
                "sparsities": [0.0, 0.5],
                "fine_tune_steps": 3,
                "bits": [4],
                "images": 60,
                "attack": {"name": "pgd", "steps": 5},
            },
            "distillation": {
                "width_factor": 0.5,
                "steps": 200,
                "eps_warmup_steps": 10,
                "lr": 0.003,
                "images": 60,
                "attack": {"name": "pgd", "steps": 5},
            },
            **report,
        }
    )
    return raw


def experiment(raw: dict[str, Any]) -> ExperimentConfig:
    return parse_config(ExperimentConfig, raw, source="test")


def test_the_map_runs_probes_and_reports_the_verdict(tmp_path: Path) -> None:
    result = run_experiment(experiment(quick()), tmp_path)
    folder = result.directory
    probes = {
        path.parent.name: json.loads(path.read_text())
        for path in folder.glob("*/plasticity-evaluation.json")
    }
    assert len(probes) == 4
    for probe in probes.values():
        fit = probe["robust_fit"]
        assert fit["images"] == 200
        assert 0 <= fit["robust_accuracy"] <= fit["clean_accuracy"] <= 1
        pruned = {entry["sparsity"]: entry for entry in probe["compression"]["pruned"]}
        assert pruned[0.5]["achieved"] == pytest.approx(0.5, abs=1e-3)
        assert pruned[0.0]["achieved"] == 0
        assert [entry["bits"] for entry in probe["compression"]["quantised"]] == [4]

    # robust fit is what the training attack does to the model on those images, nothing else
    name = "convnet-depth2-width0.5-s0"
    run = RunDirectory(folder / name)
    trained = load_trained_model(run, torch.device("cpu"))
    config = run.read_config()
    data = load_trial_data(config.data)
    attack = config.phases[-1].objective.attack.build()  # type: ignore[union-attr]
    again = robust_accuracy(
        trained.model,
        (data.train.images[:200], data.train.labels[:200]),
        {"a": attack},
        batch_size=500,
    )
    assert again.attacks[0].robust_accuracy == pytest.approx(
        probes[name]["robust_fit"]["robust_accuracy"]
    )

    distilled = {
        path.parent.name: json.loads(path.read_text())
        for path in folder.glob("*/plasticity-distillation.json")
    }
    assert set(distilled) == set(probes)
    for trial, record in distilled.items():
        width = float(trial.split("width")[1].split("-")[0])
        assert record["student"]["options"]["width"] == pytest.approx(width / 2)
        assert record["images"] == 60
        # the student learnt from its teacher (10 classes: chance is 10%)
        assert record["distilled"]["clean_accuracy"] > 0.5
        assert 0 <= record["distilled"]["robust_accuracy"] <= 1
    # teacher's and student's scores are the attack's on those models, nothing else; the
    # student's weights are kept, so it can be attacked again
    student = load_student(folder / name, distilled[name], torch.device("cpu"))
    assert (
        sum(p.numel() for p in student.parameters()) == distilled[name]["distilled"]["parameters"]
    )
    for model, part in ((trained.model, "teacher"), (student, "distilled")):
        again = robust_accuracy(
            model,
            (data.test.images[:60], data.test.labels[:60]),
            {"a": attack_of(distilled[name])},
        )
        assert again.attacks[0].robust_accuracy == pytest.approx(
            distilled[name][part]["robust_accuracy"]
        )

    # benchmarks/distillation_strength.py: the student attacked again by the standard
    # AutoAttack (no weaker than the probe's PGD, to one image), set beside its shape's model
    checked = {trial: check_trial(folder / trial, torch.device("cpu")) for trial in distilled}
    for row in checked.values():
        assert row["standard_robust_accuracy"] <= row["probe_robust_accuracy"] + 1 / 60
    direct = direct_comparison(folder, checked)
    assert direct["direct_attack"] == "pgd" and direct["students"] == 2
    wide = checked["convnet-depth1-width0.5-s0"]
    assert "direct_standard_robust_accuracy" in wide
    assert "direct_standard_robust_accuracy" not in checked["convnet-depth1-width0.25-s0"]

    report = build_report(folder)
    headings = [section.heading for section in report.sections]
    assert headings[:3] == [
        "Every trial",
        "The map (mean ± std over seeds)",
        "Depth or width, at equal parameter count",
    ]
    assert "Compression as a capacity probe" in headings
    section = next(s for s in report.sections if s.heading == "Distillation as a capacity probe")
    by_width = {row[1]: row for row in section.tables[0].rows}
    # width 0.5's student has width 0.25, a grid point: its directly trained score is shown
    assert by_width["0.5"][-1] != "–" and by_width["0.25"][-1] == "–"
    assert section.callouts[0].text.split(":")[0].split(";")[0] in ("Yes", "No", "Undecided")
    figures = {name for section in report.sections for name in section.figures}
    assert figures == {"heatmaps.png", "against-size.png"}
    verdicts = [c for s in report.sections for c in s.callouts]
    assert any(c.lead.startswith("Does depth lower the robustness cost") for c in verdicts)
    assert all(c.text.split(":")[0] in ("Yes", "No", "Undecided") for c in verdicts[:2])
    trials = report.sections[0].tables[0]
    assert len(trials.rows) == 4
    assert trials.columns[5] == "multiply-adds"

    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*/plasticity-*.json")}
    assert len(stamps) == 8
    run_experiment(experiment(quick()), tmp_path)  # nothing left to do
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/plasticity-*.json")} == stamps
    changed = quick(fit_images=100)
    with pytest.raises(ConfigError, match=r"other report settings.*fit_images"):
        run_experiment(experiment(changed), tmp_path)
    longer = quick()
    longer["report"]["distillation"]["steps"] = 61
    with pytest.raises(ConfigError, match=r"distilled with other report settings.*steps"):
        run_experiment(experiment(longer), tmp_path)


def attack_of(record: dict[str, Any]) -> Any:
    """The distillation record's scoring attack, rebuilt from its stored settings."""
    return AttackConfig.model_validate(record["settings"]["attack"]).build()


def cell(depth: float, width: float, parameters: int, cost: float, seed: int = 0) -> Cell:
    return Cell(
        trial=f"d{depth}w{width}s{seed}",
        seed=seed,
        depth=depth,
        width=width,
        parameters=parameters,
        multiply_adds=0,
        clean_before=cost / 100 + 0.5,
        clean_after=0.5,
        robust=None,
        robust_fit=None,
        probe=None,
    )


def synthetic(depth_effect: float, noise: float = 0.2) -> list[Cell]:
    """cost = 4 + depth_effect·depth − 1.5·log2 P + noise, on a 4 × 3 grid, 2 seeds, with
    parameters that shrink with depth as in convnet."""
    generator = torch.Generator().manual_seed(0)
    cells = []
    for seed in (0, 1):
        for depth in (1, 2, 3, 4):
            for width in (0.25, 0.5, 1.0):
                parameters = round(200_000 * width**2 * (1.3 - 0.1 * depth))
                value = 4 + depth_effect * depth - 1.5 * math.log2(parameters / 1000)
                value += noise * float(torch.randn(1, generator=generator))
                cells.append(cell(depth, width, parameters, value, seed))
    return cells


def test_the_fit_recovers_a_known_depth_effect_and_decides_only_when_it_can() -> None:
    helped = fit_measure(synthetic(-1.0), "cost")
    assert helped is not None
    assert helped.coefficients[1] == pytest.approx(-1.0, abs=0.2)
    assert helped.coefficients[2] == pytest.approx(-1.5, abs=0.2)
    assert helped.r_squared > 0.95
    assert len(helped.per_seed_depth) == 2
    assert depth_verdict(helped).answer == "yes"
    assert depth_verdict(fit_measure(synthetic(+1.0), "cost")).answer == "no"
    assert depth_verdict(fit_measure(synthetic(0.0, noise=2.0), "cost")).answer == "undecided"
    one_depth = [c for c in synthetic(-1.0) if c.depth == 2]
    assert fit_measure(one_depth, "cost") is None
    assert depth_verdict(None).answer == "undecided"


def test_equal_size_rows_interpolate_within_each_depth_and_never_extrapolate() -> None:
    cells = [cell(1, 1, 1000, 10.0), cell(1, 2, 4000, 6.0), cell(2, 1, 2000, 5.0)]
    depths, rows = iso_parameter_rows(grid_points(cells), "cost")
    assert depths == [1.0, 2.0]
    assert len(rows) == 1  # only 2000 is covered by both depths
    size, values = rows[0]
    assert size == 2000
    assert values[0] == pytest.approx(8.0)  # halfway in log2 between 1000 and 4000
    assert values[1] == pytest.approx(5.0)


def _refused(raw: dict[str, Any], match: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=match):
        build_plan(experiment(raw))


def test_a_sweep_over_a_field_the_model_does_not_have_is_refused() -> None:
    raw = quick()
    raw["sweep"]["grid"]["model.options.widen"] = raw["sweep"]["grid"].pop("model.options.width")
    _refused(raw, r"has no option 'widen'")


def test_an_axis_that_is_not_a_model_option_is_refused() -> None:
    _refused(
        quick(width="model.options.channels"),
        r"report\.width: model 'convnet' has no option 'channels'",
    )
    _refused(quick(depth="threat.eps"), r"report\.depth: 'threat.eps' is not a model option")


def test_pruning_sparsity_outside_zero_one_is_refused() -> None:
    raw = quick()
    raw["report"]["compression"]["sparsities"] = [0.5, 1.0]
    _refused(raw, r"sparsities\.1: 1\.0 is outside \[0, 1\)")


def test_a_distillation_student_factor_outside_zero_one_is_refused() -> None:
    raw = quick()
    raw["report"]["distillation"]["width_factor"] = 1.0
    _refused(raw, r"report\.distillation\.width_factor")


def test_a_student_needs_a_numeric_width_option() -> None:
    with pytest.raises(ConfigError, match=r"model 'convnet' has no option 'breadth'"):
        student_model(ModelConfig(name="convnet"), "breadth", 0.5)
    narrowed = student_model(ModelConfig(name="convnet", options={"depth": 3}), "width", 0.5)
    assert narrowed.options == {"depth": 3, "width": 0.5}  # the default width 1, halved


def test_a_map_without_an_adversarial_phase_last_is_refused() -> None:
    raw = quick(after_phase="clean")
    _refused(raw, r"report\.after_phase: phase 'clean' trains without an attack")


def test_a_calibrated_threat_is_refused() -> None:
    raw = copy.deepcopy(quick())
    raw["threat"] = {"eps": "calibrated"}
    raw["calibration"] = {"after_phase": "clean", "images": 50}
    raw["phases"][0]["shared"] = True
    _refused(raw, "fixed threat.eps")


def test_train_images_keeps_the_first_n_and_refuses_more_than_there_are() -> None:
    from robustlab.config import DataConfig
    from robustlab.errors import DatasetError

    full = load_trial_data(DataConfig(dataset="digits"))
    first = load_trial_data(DataConfig(dataset="digits", train_images=100))
    assert torch.equal(first.train.images, full.train.images[:100])
    assert torch.equal(first.test.labels, full.test.labels)  # the test split is whole
    with pytest.raises(
        DatasetError, match=r"data\.train_images: 5000 asked for, but digits has 1437"
    ):
        load_trial_data(DataConfig(dataset="digits", train_images=5000))
