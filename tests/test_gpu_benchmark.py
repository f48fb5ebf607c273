"""benchmarks/gpu.sh's pieces run without a GPU: the throughput benchmark's adversarial
step trains (on CPU here) and the reduced faithful config is a valid experiment."""

from __future__ import annotations

import torch
from benchmarks.gpu_reduced_config import reduced_table_config
from benchmarks.gpu_throughput import VARIANTS, measure

from robustlab.config import ExperimentConfig, parse_config
from robustlab.experiments.plan import build_plan


def test_the_throughput_benchmark_measures_a_training_step_on_cpu() -> None:
    row = measure("thesis-shallow", VARIANTS[0], torch.device("cpu"), 2, 0.2)
    assert row["images_per_second"] > 0 and row["steps"] >= 1


def test_the_reduced_faithful_config_keeps_the_pgd_200_training_attack() -> None:
    config = parse_config(ExperimentConfig, reduced_table_config(), source="reduced")
    plan = build_plan(config)
    assert len(plan.trials) == 2  # thesis-shallow and thesis-deep, one seed, ε = 0.3
    trial = plan.trials[0].resolve()
    assert trial.phases[1].attack is not None
    assert trial.phases[1].attack.params["steps"] == 200
    assert trial.data.train_images == 12_800
