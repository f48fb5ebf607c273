"""Datasets made in process, needing no files: sklearn's 8×8 digits and a synthetic set.

Both are small and deterministic, so tests and quick experiments run anywhere, offline, and
give the same split every time.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from robustlab.data.records import DatasetInfo, DatasetStatus, FileCheck, Split, SplitName
from robustlab.data.source import DatasetSource, RemoteFile

Arrays = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]

DIGIT_NAMES = tuple(str(digit) for digit in range(10))


class BuiltinDataset(DatasetSource):
    """A dataset generated in memory: always present, nothing to verify or download."""

    def __init__(self, info: DatasetInfo) -> None:
        self.info = info

    @abstractmethod
    def arrays(self, split: SplitName) -> Arrays:
        """The cached, read-only arrays of one split."""

    def load(self, split: SplitName, root: Path, *, verify: bool) -> Split:
        images, labels = self.arrays(split)
        return Split(images=torch.tensor(images), labels=torch.tensor(labels))

    def verify(self, root: Path) -> list[FileCheck]:
        return []

    def status(self, root: Path) -> DatasetStatus:
        return DatasetStatus(self.info.name, True, None, 0, 0, needs_files=False)

    def remote_files(self) -> list[RemoteFile]:
        return []


DIGITS_TEST_FRACTION = 0.2
DIGITS_SEED = 0


@cache
def _digits_split() -> dict[SplitName, Arrays]:
    """sklearn's 1,797 digits, split 80/20 stratified by class with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (np.asarray(digits.images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    labels = np.asarray(digits.target, dtype=np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SEED,
        stratify=labels,
    )
    return {"train": _frozen(train_x, train_y), "test": _frozen(test_x, test_y)}


class DigitsDataset(BuiltinDataset):
    def arrays(self, split: SplitName) -> Arrays:
        return _digits_split()[split]


SYNTHETIC_SEED = 0
SYNTHETIC_SIZES: dict[SplitName, int] = {"train": 1000, "test": 200}
SYNTHETIC_NOISE = 0.3
SYNTHETIC_CLASSES = 10


@cache
def _synthetic(split: SplitName) -> Arrays:
    """Class prototypes (fixed random 8×8 patterns) plus Gaussian noise, clipped to [0, 1].

    The noise is large enough that no single pixel decides the class but small enough that a
    small CNN learns the set in a few epochs; classes are balanced and order is shuffled.
    """
    prototypes = np.random.default_rng([SYNTHETIC_SEED, 0]).uniform(
        0.0, 1.0, size=(SYNTHETIC_CLASSES, 1, 8, 8)
    )
    rng = np.random.default_rng([SYNTHETIC_SEED, 1 if split == "train" else 2])
    count = SYNTHETIC_SIZES[split]
    labels = rng.permutation(np.arange(count) % SYNTHETIC_CLASSES).astype(np.int64)
    noise = rng.normal(0.0, SYNTHETIC_NOISE, size=(count, 1, 8, 8))
    images = np.clip(prototypes[labels] + noise, 0.0, 1.0).astype(np.float32)
    return _frozen(images, labels)


class SyntheticDataset(BuiltinDataset):
    def arrays(self, split: SplitName) -> Arrays:
        return _synthetic(split)


def _frozen(images: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> Arrays:
    """Cached arrays are shared, so make them read-only; ``load`` hands out copies."""
    images = np.ascontiguousarray(images)
    labels = np.ascontiguousarray(labels)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


DIGITS = DigitsDataset(
    DatasetInfo(
        name="digits",
        input_shape=(1, 8, 8),
        num_classes=10,
        class_names=DIGIT_NAMES,
        mean=(0.3054,),
        std=(0.3761,),
        needs_files=False,
        description="scikit-learn's 8×8 handwritten digits (built in), 1,437 train / 360 test",
    )
)

SYNTHETIC = SyntheticDataset(
    DatasetInfo(
        name="synthetic",
        input_shape=(1, 8, 8),
        num_classes=SYNTHETIC_CLASSES,
        class_names=tuple(f"class {index}" for index in range(SYNTHETIC_CLASSES)),
        mean=(0.5175,),
        std=(0.3356,),
        needs_files=False,
        description="deterministic prototypes + noise, 1×8×8, 10 classes, 1,000 train / 200 test",
    )
)
