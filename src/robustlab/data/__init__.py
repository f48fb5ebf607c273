"""Datasets: finding, verifying, loading and downloading them by registry name.

Every file is checked against its published checksum before use, and every problem raises a
DatasetError whose message names the file and the fix.
"""

from __future__ import annotations

from robustlab.data.catalog import (
    DATASETS,
    dataset_info,
    dataset_status,
    download_dataset,
    load_split,
    verify_dataset,
)
from robustlab.data.records import DatasetInfo, DatasetStatus, FileCheck, Split, SplitName
from robustlab.data.root import DATA_ROOT_ENV, resolve_data_root
from robustlab.data.source import DatasetSource
from robustlab.data.verification import DatasetVerdict, VerificationReport, verify_datasets

__all__ = [
    "DATASETS",
    "DATA_ROOT_ENV",
    "DatasetInfo",
    "DatasetSource",
    "DatasetStatus",
    "DatasetVerdict",
    "FileCheck",
    "Split",
    "SplitName",
    "VerificationReport",
    "dataset_info",
    "dataset_status",
    "download_dataset",
    "load_split",
    "resolve_data_root",
    "verify_dataset",
    "verify_datasets",
]
