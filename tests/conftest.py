"""Shared fixtures: small trained models to attack, trained once and cached between runs.

Models are trained with robustlab's own trainer into pytest's cache directory, so a second
``pytest`` run reuses them; a stale or corrupt cached run is retrained.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robustlab.config import TrialConfig, parse_config
from robustlab.data import Split, load_split
from robustlab.errors import RobustlabError
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory
from robustlab.train import train_trial

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_data_root() -> Path | None:
    """$ROBUSTLAB_DATA if set, else the shared folder beside the repository, else None."""
    from_env = os.environ.get("ROBUSTLAB_DATA", "").strip()
    if from_env:
        return Path(from_env)
    return SHARED_DATA if SHARED_DATA.is_dir() else None


@dataclass(frozen=True)
class TrainedSubject:
    """A trained model in eval mode and its dataset's test split."""

    model: nn.Module
    test: Split
    dataset: str

    def batch(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.test.images[:count], self.test.labels[:count]


def _trained(cache_dir: Path, name: str, raw: dict[str, Any], root: Path | None) -> TrainedSubject:
    config: TrialConfig = parse_config(TrialConfig, {"trial": name, **raw}, source="conftest")
    run = RunDirectory(cache_dir / name)
    try:
        train_trial(config, run.path, resume=True)
        trained = load_trained_model(run, torch.device("cpu"))
    except (RobustlabError, RuntimeError):
        shutil.rmtree(run.path, ignore_errors=True)
        train_trial(config, run.path)
        trained = load_trained_model(run, torch.device("cpu"))
    test = load_split(config.data.dataset, "test", root)
    return TrainedSubject(model=trained.model, test=test, dataset=config.data.dataset)


@pytest.fixture(scope="session")
def model_cache(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("robustlab-trained-models"))


@pytest.fixture(scope="session")
def digits_model(model_cache: Path) -> TrainedSubject:
    """thesis-shallow on the built-in digits: ~97% clean accuracy, trained in seconds."""
    raw = {
        "data": {"dataset": "digits"},
        "model": {"name": "thesis-shallow"},
        "device": "cpu",
        "phases": [{"name": "clean", "epochs": 15, "batch_size": 64}],
        "evaluation": {"train_subset": 0},
    }
    return _trained(model_cache, "digits-shallow-v1", raw, None)


@pytest.fixture(scope="session")
def mnist_model(model_cache: Path) -> TrainedSubject:
    """thesis-shallow trained without defense on real MNIST for one epoch (~98.5% clean)."""
    root = real_data_root()
    if root is None or not (root / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST training files absent: set ROBUSTLAB_DATA to a folder with mnist/")
    raw = {
        "data": {"dataset": "mnist", "root": str(root)},
        "model": {"name": "thesis-shallow"},
        "device": "cpu",
        "phases": [{"name": "clean", "epochs": 1, "batch_size": 128}],
        "evaluation": {"train_subset": 0},
    }
    return _trained(model_cache, "mnist-shallow-v1", raw, root)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One thread per trial everywhere: the same float reductions, so equal bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
