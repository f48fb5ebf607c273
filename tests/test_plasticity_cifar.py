"""The CIFAR-10 plasticity maps: the CPU config runs end to end on small files in the real
CIFAR format (no CIFAR files exist offline), and every full-size GPU config expands into a
valid plan with models that build for 3×32×32 inputs."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from robustlab.config import ExperimentConfig, load_experiment, parse_config
from robustlab.data import load_split
from robustlab.experiments import run_experiment
from robustlab.experiments.plan import build_plan
from robustlab.experiments.reporting import build_report
from robustlab.train import inputs
from tests.test_data_cifar import CIFAR10_BATCHES, batch_bytes

ROOT = Path(__file__).resolve().parents[1]
GPU_CONFIGS = ["convnet", "preact-resnet", "wide-resnet"]


def write_small_cifar10(root: Path, per_batch: int = 40) -> None:
    """CIFAR-10 in its extracted layout with ``per_batch`` images per batch: images whose
    brightness says their class, so a model can learn something in one epoch."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*CIFAR10_BATCHES, "test_batch"]:
        labels = [int(label) for label in rng.integers(0, 10, per_batch)]
        noise = rng.integers(0, 40, size=(per_batch, 3072))
        data = (np.array(labels)[:, None] * 20 + noise).clip(0, 255).astype(np.uint8)
        (folder / name).write_bytes(batch_bytes(data, labels, b"labels"))
    meta = {b"label_names": [b"airplane"], b"num_vis": 3072, b"num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))


def test_the_cpu_config_runs_on_real_format_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_small_cifar10(tmp_path / "data")

    def unverified(name: str, split: Any, root: Any = None, *, verify: bool = True) -> Any:
        return load_split(name, split, root, verify=False)  # made-up files: no checksums

    monkeypatch.setattr(inputs, "load_split", unverified)
    raw: dict[str, Any] = yaml.safe_load(
        (ROOT / "configs" / "plasticity-map-cifar10-cpu.yaml").read_text()
    )
    raw["data"].update({"root": str(tmp_path / "data"), "train_images": 120})
    raw.update({"device": "cpu", "jobs": 1, "seeds": [0]})
    raw["sweep"]["grid"] = {"model.options.depth": [2, 4], "model.options.width": [0.125]}
    for phase in raw["phases"]:
        phase["epochs"] = 1
        phase["batch_size"] = 40
    raw["phases"][1]["objective"]["attack"]["steps"] = 2
    raw["evaluation"]["attack_images"] = 20
    raw["evaluation"]["phase_end_attacks"] = [{"name": "pgd", "steps": 3}]
    raw["report"].update({"robust_attack": "pgd", "fit_images": 40})
    config = parse_config(ExperimentConfig, raw, source="test")
    result = run_experiment(config, tmp_path / "runs")
    report = build_report(result.directory)
    trials = report.sections[0].tables[0]
    assert [row[1] for row in trials.rows] == ["2", "4"]  # depth column
    assert all(row[6] != "–" and row[9] != "–" for row in trials.rows)  # clean before, robust
    assert len(list(result.directory.glob("*/plasticity-evaluation.json"))) == 2


@pytest.mark.parametrize("family", GPU_CONFIGS)
def test_the_full_size_configs_expand_into_valid_plans(family: str) -> None:
    config = load_experiment(ROOT / "configs" / f"plasticity-map-cifar10-{family}.yaml")
    plan = build_plan(config)
    assert plan.kind.name == "plasticity-map"
    assert len(plan.trials) == 4 * 3 * 3
    assert config.data.augment is not None and config.data.augment.crop_padding == 4


def test_the_full_size_mnist_config_holds_the_thesis_models_beside_the_grid() -> None:
    config = load_experiment(ROOT / "configs" / "plasticity-map-mnist.yaml")
    plan = build_plan(config)
    assert len(plan.trials) == (4 * 4 + 2) * 3
    thesis = {
        spec.name: plan.facts[spec.name].parameters
        for spec in plan.trials
        if "thesis" in spec.name and spec.name.endswith("s0")
    }
    # the thesis's own parameter counts (docs/reproduction.md): the deep model is the smaller
    assert sorted(thesis.values()) == [1_048_394, 1_199_882]
