"""Plain records the data API hands out, kept free of loading logic so any module can use them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

SplitName = Literal["train", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "test")

CheckStatus = Literal["ok", "missing", "mismatch", "unreadable"]
Algorithm = Literal["sha256", "md5"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset without loading it (shapes, classes, stats)."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    """Per-channel mean of the training split, in pixel units [0, 1]."""
    std: tuple[float, ...]
    """Per-channel standard deviation of the training split, in pixel units [0, 1]."""
    needs_files: bool
    """False for datasets generated in process (digits, synthetic): nothing to find or download."""
    description: str


@dataclass(frozen=True)
class Split:
    """One split in memory: float32 images N×C×H×W in [0, 1] and int64 labels N."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one dataset file, for `robustlab data verify`."""

    path: Path
    algorithm: Algorithm
    expected: str
    status: CheckStatus
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a dataset's files are present, for `robustlab data list` and dataset fallbacks."""

    name: str
    present: bool
    """All files needed for both splits were found (always True for built-in datasets)."""
    location: str | None
    """The directory (or directories, comma-separated) the files were found in; None if none."""
    files_found: int
    files_expected: int
    needs_files: bool
