"""MNIST and Fashion-MNIST: four IDX files each, gzip-compressed or not.

Files are checked by the sha256 of their decompressed payload, which survives recompression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from robustlab.data.checksums import (
    Checksum,
    CorruptStreamError,
    StreamDigest,
    check_file,
    is_gzip_name,
    stream_file,
)
from robustlab.data.idx import parse_idx
from robustlab.data.messages import (
    checksum_error,
    format_error,
    missing_files_error,
    unreadable_error,
    with_fix,
)
from robustlab.data.records import (
    SPLITS,
    DatasetInfo,
    DatasetStatus,
    FileCheck,
    Split,
    SplitName,
)
from robustlab.data.source import DatasetSource, RemoteFile, located_in
from robustlab.errors import DatasetError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's `dataset-fashion-mnist` package installs the same four files."""

IMAGE_SIZE = 28


@dataclass(frozen=True)
class IdxFile:
    name: str
    """Canonical (gzip) file name; the same name without .gz is accepted too."""
    sha256: str
    """Digest of the decompressed payload."""

    @property
    def raw_name(self) -> str:
        return self.name.removesuffix(".gz")

    @property
    def checksum(self) -> Checksum:
        return Checksum("sha256", self.sha256, of_payload=True)


@dataclass(frozen=True)
class IdxSplitFiles:
    images: IdxFile
    labels: IdxFile


class IdxDataset(DatasetSource):
    """An MNIST-layout dataset: 28×28 grey images and labels in IDX files under <root>/<name>."""

    def __init__(
        self,
        info: DatasetInfo,
        splits: dict[SplitName, IdxSplitFiles],
        *,
        mirrors: Sequence[str],
        extra_dirs: Sequence[Path] = (),
        extra_fix: str = "",
    ) -> None:
        self.info = info
        self.splits = splits
        self.default_mirrors = tuple(mirrors)
        self.extra_dirs = tuple(extra_dirs)
        """Searched after the data root (e.g. a system-wide package's directory)."""
        self.extra_fix = extra_fix

    def files(self) -> list[IdxFile]:
        return [
            f for split in SPLITS for f in (self.splits[split].images, self.splits[split].labels)
        ]

    def search_dirs(self, root: Path) -> list[Path]:
        return [self.dataset_dir(root), *self.extra_dirs]

    def find(self, file: IdxFile, root: Path) -> Path | None:
        """The first existing copy: each directory in order, the .gz before the raw file."""
        for directory in self.search_dirs(root):
            for name in (file.name, file.raw_name):
                candidate = directory / name
                if candidate.is_file():
                    return candidate
        return None

    def load(self, split: SplitName, root: Path, *, verify: bool) -> Split:
        files = self.splits[split]
        found = {f.name: self.find(f, root) for f in (files.images, files.labels)}
        missing = [
            f"{f.name} ({f.checksum.describe()})"
            for f in (files.images, files.labels)
            if found[f.name] is None
        ]
        if missing:
            raise missing_files_error(
                self.info.name, missing, self.search_dirs(root), extra_fix=self.extra_fix
            )
        images_path, labels_path = found[files.images.name], found[files.labels.name]
        assert images_path is not None and labels_path is not None
        images = self._read(images_path, files.images, verify)
        labels = self._read(labels_path, files.labels, verify)
        return self._to_split(images, images_path, labels, labels_path)

    def _read(self, path: Path, file: IdxFile, verify: bool) -> npt.NDArray[np.generic]:
        digest = StreamDigest("sha256" if verify else None, gunzip=is_gzip_name(path), keep=True)
        try:
            actual = stream_file(path, digest)
        except (OSError, CorruptStreamError) as error:
            raise unreadable_error(self.info.name, path, str(error)) from None
        if verify and actual != file.sha256:
            assert actual is not None
            raise checksum_error(self.info.name, path, file.checksum, actual)
        assert digest.payload is not None
        try:
            return parse_idx(digest.payload, str(path))
        except DatasetError as error:
            raise with_fix(error, self.info.name) from None

    def _to_split(
        self,
        images: npt.NDArray[np.generic],
        images_path: Path,
        labels: npt.NDArray[np.generic],
        labels_path: Path,
    ) -> Split:
        """Check the arrays are MNIST-shaped (a valid IDX file can still be the wrong one)."""
        _, height, width = self.info.input_shape
        name = self.info.name
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (height, width):
            raise format_error(
                name,
                images_path,
                f"expected uint8 images of shape N×{height}×{width}, "
                f"found {images.dtype} {images.shape}; is this the right file?",
            )
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise format_error(
                name,
                labels_path,
                f"expected a uint8 vector of labels, found {labels.dtype} {labels.shape}; "
                "is this the right file?",
            )
        if labels.shape[0] != images.shape[0]:
            raise format_error(
                name,
                labels_path,
                f"it holds {labels.shape[0]} labels but {images_path} holds {images.shape[0]} "
                "images; the two files are from different releases or splits",
            )
        if labels.size and int(labels.max()) >= self.info.num_classes:
            raise format_error(
                name,
                labels_path,
                f"label {int(labels.max())} is out of range for {self.info.num_classes} classes",
            )
        pixels = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255.0)
        return Split(images=pixels, labels=torch.from_numpy(labels.astype(np.int64)))

    def verify(self, root: Path) -> list[FileCheck]:
        checks = []
        for file in self.files():
            path = self.find(file, root)
            if path is None:
                looked = ", ".join(str(d) for d in self.search_dirs(root))
                checks.append(
                    FileCheck(
                        self.dataset_dir(root) / file.name,
                        "sha256",
                        file.sha256,
                        "missing",
                        f"not found (looked in {looked})",
                    )
                )
            else:
                checks.append(check_file(path, file.checksum))
        return checks

    def status(self, root: Path) -> DatasetStatus:
        files = self.files()
        found = [path for path in (self.find(f, root) for f in files) if path is not None]
        return DatasetStatus(
            name=self.info.name,
            present=len(found) == len(files),
            location=located_in(found),
            files_found=len(found),
            files_expected=len(files),
            needs_files=True,
        )

    def remote_files(self) -> list[RemoteFile]:
        return [RemoteFile(f.name, f.checksum, (f.raw_name,)) for f in self.files()]


def _mnist_files(sha256: dict[str, str]) -> dict[SplitName, IdxSplitFiles]:
    def file(name: str) -> IdxFile:
        return IdxFile(name, sha256[name])

    return {
        "train": IdxSplitFiles(
            file("train-images-idx3-ubyte.gz"), file("train-labels-idx1-ubyte.gz")
        ),
        "test": IdxSplitFiles(file("t10k-images-idx3-ubyte.gz"), file("t10k-labels-idx1-ubyte.gz")),
    }


MNIST = IdxDataset(
    DatasetInfo(
        name="mnist",
        input_shape=(1, IMAGE_SIZE, IMAGE_SIZE),
        num_classes=10,
        class_names=tuple(str(digit) for digit in range(10)),
        mean=(0.1307,),
        std=(0.3081,),
        needs_files=True,
        description="MNIST handwritten digits, 28×28 grey, 60,000 train / 10,000 test",
    ),
    _mnist_files(
        {
            "train-images-idx3-ubyte.gz": (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
            ),
            "train-labels-idx1-ubyte.gz": (
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
            ),
        }
    ),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
)

FASHION_MNIST = IdxDataset(
    DatasetInfo(
        name="fashion-mnist",
        input_shape=(1, IMAGE_SIZE, IMAGE_SIZE),
        num_classes=10,
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        mean=(0.2860,),
        std=(0.3530,),
        needs_files=True,
        description="Fashion-MNIST product images, 28×28 grey, 60,000 train / 10,000 test",
    ),
    _mnist_files(
        {
            "train-images-idx3-ubyte.gz": (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
            ),
            "train-labels-idx1-ubyte.gz": (
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
            ),
        }
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    extra_dirs=(DEBIAN_FASHION_MNIST,),
    extra_fix="On Debian, `apt-get install dataset-fashion-mnist` installs them system-wide.",
)
