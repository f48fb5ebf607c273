"""The wording of dataset errors, in one place so every message names the file and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from robustlab.data.checksums import Checksum
from robustlab.data.root import DATA_ROOT_ENV
from robustlab.errors import DatasetError


def redownload_fix(dataset: str) -> str:
    return (
        f"Fix: delete it and run `robustlab data download {dataset}`, "
        "or copy the canonical file there again."
    )


def missing_files_error(
    dataset: str,
    files: Sequence[str],
    looked_in: Sequence[Path],
    *,
    extra_fix: str = "",
) -> DatasetError:
    """A dataset file is nowhere to be found: say where we looked and how to get it."""
    where = "\n".join(f"  {directory}" for directory in looked_in)
    listed = ", ".join(files)
    fix = (
        f"Fix: run `robustlab data download {dataset}`, or copy the canonical files into "
        f"{looked_in[0]}; or point robustlab at the directory that holds {dataset}/ with "
        f"--data-root DIR or the {DATA_ROOT_ENV} environment variable."
    )
    if extra_fix:
        fix += f" {extra_fix}"
    return DatasetError(
        f"dataset {dataset!r}: missing file(s) {listed}.\nLooked in:\n{where}\n{fix}"
    )


def checksum_error(dataset: str, path: Path | str, checksum: Checksum, actual: str) -> DatasetError:
    what = " of the decompressed payload" if checksum.of_payload else ""
    return DatasetError(
        f"dataset {dataset!r}: {path} is corrupt or not the canonical file: "
        f"its {checksum.algorithm}{what} is {actual}, expected {checksum.digest}.\n"
        f"{redownload_fix(dataset)}"
    )


def unreadable_error(dataset: str, path: Path | str, problem: str) -> DatasetError:
    return DatasetError(
        f"dataset {dataset!r}: cannot read {path}: {problem}.\n{redownload_fix(dataset)}"
    )


def format_error(dataset: str, path: Path | str, problem: str) -> DatasetError:
    """A file that reads fine but does not hold what the dataset needs."""
    return DatasetError(f"dataset {dataset!r}: {path}: {problem}.\n{redownload_fix(dataset)}")


def with_fix(error: DatasetError, dataset: str) -> DatasetError:
    """Append the re-download advice to a parser's error, which cannot know the dataset."""
    problem = str(error).rstrip(".")
    return DatasetError(f"dataset {dataset!r}: {problem}.\n{redownload_fix(dataset)}")
