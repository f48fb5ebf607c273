"""Experiments end to end: an interrupted experiment resumes to the same result, the report is
written in every format and renders in a real browser, and calibration finds the ε it
should."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from matplotlib.image import imread

from robustlab.config import ExecutorConfig, ExperimentConfig, parse_config, to_yaml
from robustlab.errors import ConfigError
from robustlab.experiments import build_plan, run_experiment
from robustlab.experiments.executors import build_executor
from robustlab.experiments.reporting import write_experiment_report
from robustlab.store.runs import RunDirectory

ROOT = Path(__file__).resolve().parents[1]


SMALL_EXPERIMENT = """
name: small
data: {dataset: synthetic}
models:
  - {name: convnet, options: {depth: 2, width: 0.25}, label: shallow}
  - {name: convnet, options: {depth: 3, width: 0.25}, label: deep}
seeds: [0, 1]
device: cpu
threat: {eps: calibrated}
phases:
  - name: clean
    epochs: 2
    batch_size: 64
    shared: true
    evaluation:
      attacks: [{name: pgd, eps: 0.1, steps: 5}]
      phase_end_attacks: [{name: pgd, steps: 10, images: 50}]
  - name: adversarial
    epochs: 2
    batch_size: 64
    objective: {type: adversarial, attack: {name: pgd, steps: 3}}
evaluation:
  train_subset: 200
  attack_images: 100
  attacks: [{name: pgd, steps: 5}]
  phase_end_attacks: [{name: pgd, steps: 10}, {name: fgsm}]
calibration:
  after_phase: clean
  images: 100
  iterations: 4
  attack: {name: pgd, eps: 1.0, steps: 10, early_stop: true}
report:
  hypothesis: {shallow: shallow, deep: deep}
  reference: thesis-table-5-1
"""


def small_experiment() -> dict:
    """Two models, two seeds, a shared standard phase, PGD training at the calibrated ε."""
    raw: dict = yaml.safe_load(SMALL_EXPERIMENT)
    return raw


def experiment(raw: dict) -> ExperimentConfig:
    config: ExperimentConfig = parse_config(ExperimentConfig, raw, source="test")
    return config


def strip_times(records: list[dict]) -> list[dict]:
    def clean(value):  # type: ignore[no-untyped-def]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if "seconds" not in k and k != "time"}
        return value

    return [clean(record) for record in records]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    run_experiment(experiment(small_experiment()), out)
    return out / "small"


def test_experiment_runs_every_trial_with_the_calibrated_eps(finished: Path) -> None:
    summary = json.loads((finished / "summary.json").read_text())
    names = [trial["trial"] for trial in summary["trials"]]
    assert names == ["shallow-s0", "shallow-s1", "deep-s0", "deep-s1"]
    eps = summary["calibration"]["eps"]
    assert 0 < eps < 0.5
    config = RunDirectory(finished / names[0]).read_config()
    assert config.phases[1].objective.attack.params["eps"] == eps  # type: ignore[union-attr]
    assert config.evaluation.phase_end_attacks[0].params["eps"] == eps
    # Calibration used the standard-trained models: its success at ε* is the target.
    curve = summary["calibration"]["curve"]
    below = [found for value, found, _possible in curve if value < eps]
    assert below and all(found < 0.56 for found in below)
    assert all(found <= possible for _value, found, possible in curve)


def test_interrupted_experiment_resumes_to_the_same_result(tmp_path: Path, finished: Path) -> None:
    config_file = tmp_path / "small.yaml"
    config_file.write_text(to_yaml(experiment(small_experiment())))
    # The reference ran in this process: same thread count, same floating-point reductions.
    env = {**os.environ, "COLUMNS": "300", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [sys.executable, "-m", "robustlab", "run", str(config_file), "--out", "runs"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first_trial = RunDirectory(tmp_path / "runs" / "small" / "shallow-s0")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        epochs = [r for r in first_trial.read_metrics() if r.get("event") == "epoch"]
        if len(epochs) >= 3:  # inside the adversarial phase of the first trial
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "runs" / "small" / "summary.json").exists()

    subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    for name in ("shallow-s0", "deep-s1"):
        resumed = RunDirectory(tmp_path / "runs" / "small" / name)
        reference = RunDirectory(finished / name)
        assert strip_times(resumed.read_metrics()) == strip_times(reference.read_metrics())
        assert resumed.read_results()["final"] == reference.read_results()["final"]


def test_report_has_every_format(finished: Path) -> None:
    folder = finished / "report"
    markdown = (folder / "report.md").read_text()
    assert "Table 5.1 shape:" in markdown and "Hypothesis 1" in markdown
    assert "Thesis Table 5.1" in markdown and "88.5% under AutoAttack" in markdown
    # the adversary's image counts are the ones each phase's attack ran on
    assert "on the first 50 test images before (clean) and the first 100 test images after" in (
        markdown
    )
    # Every model row carries mean ± std over its two seeds.
    assert re.search(r"\| shallow \| 2 \| [\d.]+ ± [\d.]+ \|", markdown)
    rows = list(csv.DictReader((folder / "report.csv").read_text().splitlines()))
    numeric = [row for row in rows if row["mean"]]
    assert numeric and all(math.isfinite(float(row["mean"])) for row in numeric)
    assert any(row["std"] for row in numeric)
    figures = sorted(path.name for path in (folder / "figures").iterdir())
    assert figures == ["attack.png", "calibration.png", "combined.png", "training.png"]
    for name in figures:
        image = imread(folder / "figures" / name)
        assert image.shape[0] > 100 and image.std() > 0.01  # a real picture, not blank
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figures)
    assert "http" not in page.replace("https://", "").split("<body>")[0]  # no remote assets


def browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.skipif(
    browser() is None, reason="no headless Chromium (Debian: apt-get install chromium)"
)
def test_report_page_renders_in_headless_chromium(finished: Path, tmp_path: Path) -> None:
    page = finished / "report" / "report.html"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
    ]  # fmt: skip
    dumped = subprocess.run(
        [str(browser()), *flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    body = re.search(r"<body[^>]*>", dumped.stdout)
    assert body, dumped.stderr[-2000:]
    images = re.search(r'data-images="(\d+)"', body.group(0))
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(0))
    assert images and loaded, body.group(0)
    assert int(images.group(1)) == 4 and int(loaded.group(1)) == 4
    shot = tmp_path / "page.png"
    subprocess.run(
        [str(browser()), *flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert imread(shot).std() > 0.01


def test_report_can_be_rebuilt_and_names_unfinished_trials(finished: Path, tmp_path: Path) -> None:
    copy = tmp_path / "small"
    shutil.copytree(finished, copy)
    shutil.rmtree(copy / "deep-s1")
    (copy / "summary.json").unlink()
    write_experiment_report(copy)
    markdown = (copy / "report" / "report.md").read_text()
    assert "Not finished (left out): deep-s1" in markdown
    assert "| deep | 1 |" in markdown


def test_a_trial_whose_config_changed_is_refused_naming_the_field(finished: Path) -> None:
    raw = small_experiment()
    raw["phases"][1]["epochs"] = 3
    with pytest.raises(ConfigError, match=r"ran with a different config.*phases\.1\.epochs"):
        run_experiment(experiment(raw), finished.parent)


SWEEP_ERRORS = [
    ({"sweep": {"grid": {"phases.missing.epochs": [2]}}}, "no phase named 'missing'"),
    ({"sweep": {"grid": {"phases.adversarial.epoch": [2]}}}, "phases.1.epoch: unknown key"),
    ({"sweep": {"grid": {"seeds": [3]}}}, "a sweep varies fields under"),
    (
        {"sweep": {"grid": {"phases.adversarial.objective.attack.epz": [1]}}},
        "no parameter 'epz'",
    ),
    ({"sweep": {"grid": {"phases.adversarial.epochs": []}}}, "an empty list of values"),
    ({"sweep": {"grid": {"phases.adversarial.epochs": ["many"]}}}, "valid integer"),
    ({"sweep": {"grid": {"model.options.depth": [2.5]}}}, "option 'depth' must be an integer"),
    ({"sweep": {}}, "a sweep needs a grid, points or extra_points"),
    ({"sweep": {"grid": {"threat.eps": ["lots"]}}}, "expected a number"),
    ({"calibration": {"after_phase": "adversarial"}}, "must name a shared phase"),
    ({"calibration": None}, "has no calibration section"),
    ({"settings": [{"name": "x", "overrides": {}}]}, "replaced by threat"),
    ({"executor": "dask"}, "executor.type"),
    ({"kind": "nope"}, "unknown experiment kind 'nope'"),
    (
        {"report": {"hypothesis": {"shallow": "shallow", "deep": "deeper"}}},
        "report.hypothesis.deep: no model",
    ),
    ({"report": {"titel": "x"}}, "report.titel: unknown key"),
]


@pytest.mark.parametrize(("change", "message"), SWEEP_ERRORS)
def test_config_errors_name_the_field_before_any_work(change: dict, message: str) -> None:
    raw = {**small_experiment(), **change}
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_plan(experiment(raw))


def test_an_executor_that_is_not_installed_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if absent
    with pytest.raises(ConfigError, match=r"ray is not installed.*robustlab\[ray\]"):
        build_executor(ExecutorConfig(type="ray"), 2)
    with pytest.raises(ConfigError, match="serial runs one job at a time"):
        build_executor(ExecutorConfig(type="serial"), 2)


def test_calibrated_eps_may_not_reach_a_shared_phase() -> None:
    raw = small_experiment()
    raw["phases"][0]["evaluation"]["attacks"] = [{"name": "pgd", "steps": 5}]  # inherits ε*
    with pytest.raises(ConfigError, match="shared phase clean would train or be attacked"):
        experiment(raw)


def test_one_eps_reaches_every_attack_that_states_none() -> None:
    """The threat's ε fills the training attack, the per-epoch and phase-end attacks; attacks
    with their own ε keep it; the calibrated ε is filled in only when known."""
    raw = {**small_experiment(), "threat": {"eps": "8/255"}}
    (spec, *_) = build_plan(experiment(raw)).trials
    trial = spec.resolve()
    assert trial.phases[1].objective.attack.params["eps"] == 8 / 255  # type: ignore[union-attr]
    assert [a.params["eps"] for a in trial.evaluation.phase_end_attacks] == [8 / 255] * 2
    assert trial.phases[0].evaluation.attacks[0].params["eps"] == 0.1  # type: ignore[index]
    calibrated = build_plan(experiment(small_experiment())).trials[0]
    assert calibrated.needs_calibration
    with pytest.raises(ValueError, match="calibrate first"):
        calibrated.resolve()
    assert calibrated.resolve(0.25).evaluation.attacks[0].params["eps"] == 0.25  # type: ignore[index]


def test_sweep_points_expand_once_with_names_from_the_varied_values() -> None:
    raw = small_experiment()
    raw["models"] = [{"name": "convnet", "options": {"width": 0.25}}]
    raw["report"] = {}
    raw["sweep"] = {
        "grid": {"model.options.depth": [2, 3], "phases.*.optimizer.weight_decay": [0.0, 1e-4]},
        "points": [{"threat.eps": "8/255"}, {"threat.eps": "calibrated", "label": "star"}],
    }
    raw["seeds"] = [0]
    plan = build_plan(experiment(raw))
    names = [spec.name for spec in plan.trials]
    assert names[:4] == [
        "convnet-eps8-255-depth2-weight_decay0-s0",
        "convnet-eps8-255-depth2-weight_decay0.0001-s0",
        "convnet-eps8-255-depth3-weight_decay0-s0",
        "convnet-eps8-255-depth3-weight_decay0.0001-s0",
    ]
    assert names[4] == "convnet-star-depth2-weight_decay0-s0" and len(names) == 8
    deep = plan.trial("convnet-eps8-255-depth3-weight_decay0.0001-s0")
    config = deep.resolve()
    assert config.model.options == {"width": 0.25, "depth": 3}
    assert all(phase.optimizer.weight_decay == 1e-4 for phase in config.phases)
    assert config.evaluation.attacks[0].params["eps"] == 8 / 255  # type: ignore[index]
    assert plan.facts[deep.name].parameters > plan.facts[names[0]].parameters
    assert not deep.needs_calibration and plan.trial(names[4]).needs_calibration


def test_extra_points_run_as_written_beside_the_grid() -> None:
    """Reference models beside a grid: not combined with it, named by label or values."""
    raw = small_experiment()
    raw["models"] = [{"name": "convnet"}]
    raw["report"] = {}
    raw["threat"] = {"eps": 0.1}
    raw.pop("calibration")
    raw["seeds"] = [0]
    raw["sweep"] = {
        "grid": {"model.options.depth": [1, 2], "model.options.width": [0.25]},
        "extra_points": [
            {"model.options.depth": 2, "model.options.width": 1, "label": "thesis-shallow"},
            {"model.options.depth": 3, "model.options.width": 1},
        ],
    }
    plan = build_plan(experiment(raw))
    assert [spec.name for spec in plan.trials] == [
        "convnet-depth1-width0.25-s0",
        "convnet-depth2-width0.25-s0",
        "convnet-thesis-shallow-s0",
        "convnet-depth3-width1-s0",
    ]
    assert plan.trial("convnet-thesis-shallow-s0").resolve().model.options == {
        "depth": 2,
        "width": 1,
    }
    only = {**raw, "sweep": {"extra_points": raw["sweep"]["extra_points"]}}
    assert len(build_plan(experiment(only)).trials) == 2  # no unvaried trial beside them
