"""The built-in datasets: scikit-learn's digits and the synthetic set tests train on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from robustlab.data import (
    dataset_info,
    dataset_status,
    download_dataset,
    load_split,
    verify_dataset,
)


@pytest.mark.parametrize(("name", "sizes"), [("digits", (1437, 360)), ("synthetic", (1000, 200))])
def test_shapes_range_and_determinism(name: str, sizes: tuple[int, int]) -> None:
    info = dataset_info(name)
    for split, size in zip(("train", "test"), sizes, strict=True):
        first = load_split(name, split)  # type: ignore[arg-type]
        again = load_split(name, split)  # type: ignore[arg-type]
        assert first.images.shape == (size, *info.input_shape) == (size, 1, 8, 8)
        assert first.images.dtype == torch.float32 and first.labels.dtype == torch.int64
        assert float(first.images.min()) >= 0.0 and float(first.images.max()) <= 1.0
        assert set(first.labels.tolist()) == set(range(10))
        assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
        first.images.zero_()  # callers get their own copy
        assert not torch.equal(first.images, load_split(name, split).images)  # type: ignore[arg-type]
    train = load_split(name, "train")
    assert float(train.images.mean()) == pytest.approx(info.mean[0], abs=1e-4)
    assert float(train.images.std()) == pytest.approx(info.std[0], abs=1e-4)


def test_builtin_datasets_need_no_files(tmp_path: Path) -> None:
    for name in ("digits", "synthetic"):
        assert not dataset_info(name).needs_files
        assert verify_dataset(name, tmp_path) == []
        assert download_dataset(name, tmp_path) == []
    assert not any(tmp_path.iterdir())
    statuses = {s.name: s for s in dataset_status(tmp_path)}
    assert statuses["digits"].present and statuses["synthetic"].present


def test_digits_split_is_stratified() -> None:
    train, test = load_split("digits", "train"), load_split("digits", "test")
    train_share = torch.bincount(train.labels).double() / len(train)
    test_share = torch.bincount(test.labels).double() / len(test)
    assert torch.allclose(train_share, test_share, atol=0.01)
    assert float(train.images.max()) == 1.0  # 16/16
    assert train.labels[:5].tolist() == load_split("digits", "train").labels[:5].tolist()


def test_synthetic_is_balanced_and_learnable() -> None:
    train, test = load_split("synthetic", "train"), load_split("synthetic", "test")
    assert torch.bincount(train.labels).tolist() == [100] * 10
    assert torch.bincount(test.labels).tolist() == [20] * 10
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for batch in torch.randperm(len(train)).split(50):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(train.images[batch]), train.labels[batch])
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert accuracy > 0.9
