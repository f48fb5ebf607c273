"""A small, fast trial on the synthetic dataset, shared by trainer and CLI tests."""

from __future__ import annotations

from typing import Any

from robustlab.config import TrialConfig, parse_config


def synthetic_trial(**overrides: Any) -> TrialConfig:
    raw: dict[str, Any] = {
        "experiment": "test",
        "trial": "synthetic",
        "data": {"dataset": "synthetic"},
        "model": {"name": "thesis-shallow"},
        "seed": 0,
        "device": "cpu",
        "phases": [
            {"name": "first", "epochs": 2, "batch_size": 64},
            {
                "name": "second",
                "epochs": 2,
                "batch_size": 32,
                "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
                "schedule": {"type": "cosine"},
            },
        ],
        "evaluation": {"batch_size": 500, "train_subset": 300},
    }
    raw.update(overrides)
    config: TrialConfig = parse_config(TrialConfig, raw, source="test")
    return config
