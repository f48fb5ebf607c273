"""CIFAR-10 and CIFAR-100 from the canonical python archives, packed or extracted.

<root>/<name>/ may hold the .tar.gz as downloaded, or the folder it extracts to (preferred when
complete: no decompression). Archives are read as a stream, so each byte is decompressed once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustlab.data.checksums import Checksum, check_file, digest_path
from robustlab.data.cifar_batch import Batch, parse_batch
from robustlab.data.messages import (
    checksum_error,
    missing_files_error,
    redownload_fix,
    unreadable_error,
    with_fix,
)
from robustlab.data.records import DatasetInfo, DatasetStatus, FileCheck, Split, SplitName
from robustlab.data.source import DatasetSource, RemoteFile
from robustlab.errors import DatasetError

CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)


@dataclass(frozen=True)
class CifarLayout:
    archive: str
    archive_md5: str
    folder: str
    """The directory the archive extracts to."""
    splits: dict[SplitName, tuple[str, ...]]
    meta: str
    md5: dict[str, str]
    """md5 of each extracted file (batches and meta)."""
    label_key: bytes

    def batch_names(self) -> tuple[str, ...]:
        return self.splits["train"] + self.splits["test"]


class CifarDataset(DatasetSource):
    def __init__(self, info: DatasetInfo, layout: CifarLayout, *, mirrors: Sequence[str]) -> None:
        self.info = info
        self.layout = layout
        self.default_mirrors = tuple(mirrors)

    def archive_path(self, root: Path) -> Path:
        return self.dataset_dir(root) / self.layout.archive

    def extracted_dir(self, root: Path) -> Path:
        return self.dataset_dir(root) / self.layout.folder

    def _extracted_has(self, root: Path, names: Sequence[str]) -> bool:
        folder = self.extracted_dir(root)
        return all((folder / name).is_file() for name in names)

    def load(self, split: SplitName, root: Path, *, verify: bool) -> Split:
        wanted = self.layout.splits[split]
        if self._extracted_has(root, wanted):
            folder = self.extracted_dir(root)
            raws = [
                (str(folder / name), self._read_extracted(folder / name, verify)) for name in wanted
            ]
        elif self.archive_path(root).is_file():
            raws = self._read_archive(self.archive_path(root), wanted, verify)
        else:
            raise missing_files_error(
                self.info.name,
                [
                    f"{self.layout.archive} (md5 {self.layout.archive_md5}), or the folder "
                    f"{self.layout.folder}/ it extracts to"
                ],
                [self.dataset_dir(root)],
            )
        try:
            batches = [
                parse_batch(
                    raw, source, label_key=self.layout.label_key, num_classes=self.info.num_classes
                )
                for source, raw in raws
            ]
        except DatasetError as error:
            raise with_fix(error, self.info.name) from None
        return _to_split(batches)

    def _read_extracted(self, path: Path, verify: bool) -> bytes:
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise unreadable_error(self.info.name, path, str(error)) from None
        if verify:
            checksum = Checksum("md5", self.layout.md5[path.name])
            actual = hashlib.md5(raw, usedforsecurity=False).hexdigest()
            if actual != checksum.digest:
                raise checksum_error(self.info.name, path, checksum, actual)
        return raw

    def _read_archive(
        self, archive: Path, wanted: Sequence[str], verify: bool
    ) -> list[tuple[str, bytes]]:
        if verify:
            checksum = Checksum("md5", self.layout.archive_md5)
            try:
                actual = digest_path(archive, checksum)
            except OSError as error:
                raise unreadable_error(self.info.name, archive, str(error)) from None
            if actual != checksum.digest:
                raise checksum_error(self.info.name, archive, checksum, actual)
        members = {f"{self.layout.folder}/{name}": name for name in wanted}
        found: dict[str, bytes] = {}
        try:
            with tarfile.open(archive, mode="r|gz") as tar:
                for member in tar:
                    name = members.get(member.name.removeprefix("./"))
                    handle = tar.extractfile(member) if name and member.isfile() else None
                    if name is None or handle is None:
                        continue
                    found[name] = handle.read()
                    if len(found) == len(members):
                        break
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            problem = f"not a readable .tar.gz archive (truncated or corrupt: {error})"
            raise unreadable_error(self.info.name, archive, problem) from None
        absent = [member for member, name in members.items() if name not in found]
        if absent:
            raise DatasetError(
                f"dataset {self.info.name!r}: {archive} lacks {', '.join(absent)}, so it is not "
                f"the canonical {self.layout.archive}.\n{redownload_fix(self.info.name)}"
            )
        return [(f"{archive} (member {self.layout.folder}/{name})", found[name]) for name in wanted]

    def verify(self, root: Path) -> list[FileCheck]:
        """Check what ``load`` would read: the extracted folder if present, else the archive."""
        folder, archive = self.extracted_dir(root), self.archive_path(root)
        batches = self.layout.batch_names()
        if self._extracted_has(root, batches) or (folder.is_dir() and not archive.is_file()):
            names = (*batches, self.layout.meta)
            return [
                check_file(folder / name, Checksum("md5", self.layout.md5[name])) for name in names
            ]
        check = check_file(archive, Checksum("md5", self.layout.archive_md5))
        if check.status == "missing":
            detail = f"not found, nor the folder {self.layout.folder}/ it extracts to"
            check = dataclasses.replace(check, detail=detail)
        return [check]

    def status(self, root: Path) -> DatasetStatus:
        batches = self.layout.batch_names()
        folder = self.extracted_dir(root)
        found = [folder / name for name in batches if (folder / name).is_file()]
        expected = len(batches)
        location = str(folder) if found else None
        if len(found) < expected and self.archive_path(root).is_file():
            found, expected = [self.archive_path(root)], 1
            location = str(self.dataset_dir(root))
        return DatasetStatus(
            name=self.info.name,
            present=len(found) == expected,
            location=location,
            files_found=len(found),
            files_expected=expected,
            needs_files=True,
        )

    def remote_files(self) -> list[RemoteFile]:
        return [RemoteFile(self.layout.archive, Checksum("md5", self.layout.archive_md5))]


def _to_split(batches: list[Batch]) -> Split:
    data = np.concatenate([batch.data for batch in batches])
    labels = np.concatenate([batch.labels for batch in batches])
    images = torch.from_numpy(data).reshape(-1, 3, 32, 32).to(torch.float32).div_(255.0)
    return Split(images=images, labels=torch.from_numpy(labels))


CIFAR10 = CifarDataset(
    DatasetInfo(
        name="cifar10",
        input_shape=(3, 32, 32),
        num_classes=10,
        class_names=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        needs_files=True,
        description="CIFAR-10 colour images, 32×32, 10 classes, 50,000 train / 10,000 test",
    ),
    CifarLayout(
        archive="cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        splits={
            "train": tuple(f"data_batch_{index}" for index in range(1, 6)),
            "test": ("test_batch",),
        },
        meta="batches.meta",
        md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
        label_key=b"labels",
    ),
    mirrors=CIFAR_MIRRORS,
)

CIFAR100_CLASSES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)
"""The 100 fine labels, in label order (alphabetical), as batches.meta lists them."""

CIFAR100 = CifarDataset(
    DatasetInfo(
        name="cifar100",
        input_shape=(3, 32, 32),
        num_classes=100,
        class_names=CIFAR100_CLASSES,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        needs_files=True,
        description="CIFAR-100 colour images, 32×32, 100 fine classes, 50,000 train / 10,000 test",
    ),
    CifarLayout(
        archive="cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        splits={"train": ("train",), "test": ("test",)},
        meta="meta",
        md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
        label_key=b"fine_labels",
    ),
    mirrors=CIFAR_MIRRORS,
)
