"""The dataset registry and the public functions that look datasets up by name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from robustlab.data.builtin import DIGITS, SYNTHETIC
from robustlab.data.cifar import CIFAR10, CIFAR100
from robustlab.data.download import Progress, download_files
from robustlab.data.mnist import FASHION_MNIST, MNIST
from robustlab.data.records import (
    SPLITS,
    DatasetInfo,
    DatasetStatus,
    FileCheck,
    Split,
    SplitName,
)
from robustlab.data.root import resolve_data_root
from robustlab.data.source import DatasetSource
from robustlab.errors import DatasetError
from robustlab.registry import Registry

DATASETS: Registry[DatasetSource] = Registry("dataset")
for _source in (MNIST, FASHION_MNIST, CIFAR10, CIFAR100, DIGITS, SYNTHETIC):
    DATASETS.add(_source.info.name, _source, description=_source.info.description)


def dataset_info(name: str) -> DatasetInfo:
    """Shapes, classes and normalisation of ``name``, without touching any file."""
    return DATASETS.get(name).info


def load_split(
    name: str,
    split: SplitName,
    root: str | Path | None = None,
    *,
    verify: bool = True,
) -> Split:
    """Load one split into memory; with ``verify`` every file read is checked by checksum."""
    source = DATASETS.get(name)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} for dataset {name!r}; use 'train' or 'test'")
    return source.load(split, resolve_data_root(root), verify=verify)


def verify_dataset(name: str, root: str | Path | None = None) -> list[FileCheck]:
    """Check every file of ``name``; empty for built-in datasets, which have no files."""
    return DATASETS.get(name).verify(resolve_data_root(root))


def dataset_status(root: str | Path | None = None) -> list[DatasetStatus]:
    """Every registered dataset and whether its files are present (without reading them)."""
    resolved = resolve_data_root(root)
    return [DATASETS.get(name).status(resolved) for name in DATASETS.names()]


def download_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Download ``name``'s canonical files into <root>/<name>/ and return their paths.

    Each file is tried at every mirror base URL in order (``mirrors`` replaces the defaults;
    http(s):// and file:// both work) and kept only if its checksum matches. Files already
    present and valid are not fetched again. Built-in datasets (digits, synthetic) need no
    files: the result is then an empty list.
    """
    source = DATASETS.get(name)
    files = source.remote_files()
    if not files:
        return []
    chosen = list(mirrors) if mirrors else list(source.default_mirrors)
    target = source.dataset_dir(resolve_data_root(root))
    return download_files(name, files, target, chosen, progress)
