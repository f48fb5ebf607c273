"""`robustlab data verify` as a function: a verdict per dataset, not only per file.

Checking only the datasets whose files are all present hid the cases a user most needs to
hear about: a dataset with one file missing looked absent and was skipped, and a missing data
root gave an empty table and success. Here every file-backed dataset gets a state, a partial
one is a failure, and so are a missing root and a root holding nothing to verify.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from robustlab.data.catalog import DATASETS
from robustlab.data.records import FileCheck
from robustlab.data.root import DATA_ROOT_ENV, resolve_data_root

DatasetState = Literal["complete", "incomplete", "corrupt", "absent", "built in"]
FAILED_STATES = ("incomplete", "corrupt")


@dataclass(frozen=True)
class DatasetVerdict:
    """One dataset's files and what they add up to."""

    name: str
    state: DatasetState
    checks: tuple[FileCheck, ...]
    requested: bool
    """Named by the caller: then even an absent dataset is a failure."""

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES or (self.requested and self.state == "absent")

    def summary(self) -> str:
        """A line for the table: how many files are good, and which are not."""
        if self.state == "built in":
            return "generated in memory: no files to verify"
        if self.state == "absent":
            return f"no files found (robustlab data download {self.name})"
        good = sum(check.ok for check in self.checks)
        parts = [f"{good} of {len(self.checks)} files ok"]
        for status in ("missing", "mismatch", "unreadable"):
            names = [check.path.name for check in self.checks if check.status == status]
            if names:
                parts.append(f"{status}: {', '.join(names)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class VerificationReport:
    """Every verdict, plus whether the data root itself exists."""

    root: Path
    root_exists: bool
    datasets: tuple[DatasetVerdict, ...]
    requested: bool
    """Datasets were named (else every registered dataset with files was looked at)."""

    @property
    def found_any(self) -> bool:
        """Some file-backed dataset had at least one file to check."""
        return any(v.state not in ("absent", "built in") for v in self.datasets)

    def problems(self) -> list[str]:
        """What makes the verification fail, one sentence each; empty when it passed."""
        problems = []
        only_builtin = self.requested and all(v.state == "built in" for v in self.datasets)
        if not self.root_exists and not only_builtin:
            problems.append(
                f"the data root {self.root} does not exist: pass --data-root or set "
                f"${DATA_ROOT_ENV} to the folder holding mnist/, fashion-mnist/, ..., or "
                "fetch a dataset there with robustlab data download NAME"
            )
        elif not self.requested and not self.found_any:
            problems.append(
                f"no dataset files found under {self.root}: nothing was verified "
                "(robustlab data download NAME fetches one)"
            )
        for verdict in self.datasets:
            if verdict.failed:
                problems.append(f"{verdict.name} is {verdict.state}: {verdict.summary()}")
        return problems

    @property
    def ok(self) -> bool:
        return not self.problems()


def verify_datasets(
    names: Sequence[str] | None = None, root: str | Path | None = None
) -> VerificationReport:
    """Check the files of ``names`` (default: every dataset that has files) under ``root``.

    An unknown name raises UnknownNameError (listing the known ones) before any file is read.
    """
    resolved = resolve_data_root(root)
    chosen = list(names) if names else [n for n in DATASETS.names() if _needs_files(n)]
    sources = [DATASETS.get(name) for name in chosen]
    verdicts = tuple(
        _verdict(source.info.name, source.verify(resolved), source.info.needs_files, bool(names))
        for source in sources
    )
    return VerificationReport(
        root=resolved, root_exists=resolved.is_dir(), datasets=verdicts, requested=bool(names)
    )


def _needs_files(name: str) -> bool:
    return DATASETS.get(name).info.needs_files


def _verdict(
    name: str, checks: list[FileCheck], needs_files: bool, requested: bool
) -> DatasetVerdict:
    statuses = {check.status for check in checks}
    state: DatasetState
    if not needs_files:
        state = "built in"
    elif not checks or statuses == {"missing"}:
        state = "absent"
    elif statuses & {"mismatch", "unreadable"}:
        state = "corrupt"
    elif "missing" in statuses:
        state = "incomplete"
    else:
        state = "complete"
    return DatasetVerdict(name=name, state=state, checks=tuple(checks), requested=requested)
