"""The interface every dataset implements; the DATASETS registry maps names to these."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from robustlab.data.checksums import Checksum
from robustlab.data.records import DatasetInfo, DatasetStatus, FileCheck, Split, SplitName


@dataclass(frozen=True)
class RemoteFile:
    """A file ``download_dataset`` fetches, by name relative to each mirror's base URL."""

    name: str
    checksum: Checksum
    local_alternatives: tuple[str, ...] = ()
    """Other local names that satisfy it (an uncompressed copy), so no download is needed."""


class DatasetSource(ABC):
    """How one dataset is found, verified, loaded and downloaded under a data root."""

    info: DatasetInfo
    default_mirrors: tuple[str, ...] = ()

    def dataset_dir(self, root: Path) -> Path:
        """Where downloads go, and the first place files are looked for: <root>/<name>."""
        return root / self.info.name

    @abstractmethod
    def load(self, split: SplitName, root: Path, *, verify: bool) -> Split:
        """Read one split; raise DatasetError naming the file and the fix on any problem."""

    @abstractmethod
    def verify(self, root: Path) -> list[FileCheck]:
        """Check every file of the dataset; never raises for a missing or corrupt file."""

    @abstractmethod
    def status(self, root: Path) -> DatasetStatus:
        """Which files are present, without reading them (cheap enough for `data list`)."""

    @abstractmethod
    def remote_files(self) -> list[RemoteFile]:
        """The canonical files ``download_dataset`` fetches; empty for built-in datasets."""


def located_in(paths: list[Path]) -> str | None:
    """The distinct parent directories of ``paths`` for display, in order of first use."""
    directories = list(dict.fromkeys(str(path.parent) for path in paths))
    return ", ".join(directories) if directories else None
