"""MNIST / Fashion-MNIST loading, checksums and error messages, against the real IDX files."""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import pytest
import torch

from robustlab.data import (
    DATA_ROOT_ENV,
    DATASETS,
    Split,
    dataset_info,
    dataset_status,
    load_split,
    resolve_data_root,
    verify_dataset,
)
from robustlab.data.mnist import FASHION_MNIST
from robustlab.errors import DatasetError, RobustlabError
from tests.conftest import real_data_root

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
MNIST_TEST_LABELS_SHA256 = "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"


def real_dataset_dir(name: str) -> Path:
    """The directory holding the real canonical .gz files of ``name``, or skip the test."""
    root = real_data_root()
    if root is None:
        pytest.skip(f"no real data: set {DATA_ROOT_ENV} to a folder holding {name}/")
    directory = root / name
    missing = [f for f in IDX_FILES if not (directory / f).is_file()]
    if missing:
        pytest.skip(f"real {name} files absent from {directory} ({', '.join(missing)})")
    return directory


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    return real_dataset_dir("mnist")


@pytest.fixture(scope="module")
def fashion_dir() -> Path:
    return real_dataset_dir("fashion-mnist")


@pytest.fixture(scope="module")
def fashion_train(fashion_dir: Path) -> tuple[Split, float]:
    """Loaded once for the module, with verification; also returns the seconds it took."""
    start = time.perf_counter()
    split = load_split("fashion-mnist", "train", fashion_dir.parent, verify=True)
    return split, time.perf_counter() - start


@pytest.fixture(scope="module")
def mnist_train(mnist_dir: Path) -> Split:
    return load_split("mnist", "train", mnist_dir.parent)


def _check_split(split: Split, count: int) -> None:
    assert split.images.shape == (count, 1, 28, 28)
    assert split.images.dtype == torch.float32
    assert split.labels.shape == (count,)
    assert split.labels.dtype == torch.int64
    assert float(split.images.min()) == 0.0 and float(split.images.max()) == 1.0
    assert int(split.labels.min()) == 0 and int(split.labels.max()) == 9
    assert len(split) == count


def _check_stats(split: Split, name: str) -> None:
    info = dataset_info(name)
    assert float(split.images.mean()) == pytest.approx(info.mean[0], abs=1e-4)
    assert float(split.images.std()) == pytest.approx(info.std[0], abs=1e-4)


def test_mnist_real_files(mnist_dir: Path, mnist_train: Split) -> None:
    _check_split(mnist_train, 60000)
    _check_stats(mnist_train, "mnist")
    assert mnist_train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    test = load_split("mnist", "test", mnist_dir.parent)
    _check_split(test, 10000)
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(test.labels).tolist()[:3] == [980, 1135, 1032]


def test_fashion_mnist_real_files(fashion_dir: Path, fashion_train: tuple[Split, float]) -> None:
    train, seconds = fashion_train
    _check_split(train, 60000)
    _check_stats(train, "fashion-mnist")
    assert train.labels[:5].tolist() == [9, 0, 0, 3, 0]
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert seconds < 10, f"loading fashion-mnist train with verification took {seconds:.1f} s"
    test = load_split("fashion-mnist", "test", fashion_dir.parent)
    _check_split(test, 10000)
    assert test.labels[:5].tolist() == [9, 2, 1, 1, 6]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_files_verify(name: str) -> None:
    directory = real_dataset_dir(name)
    checks = verify_dataset(name, directory.parent)
    assert [c.path.name for c in checks] == list(IDX_FILES)
    assert [c.status for c in checks] == ["ok"] * 4, checks
    assert all(c.algorithm == "sha256" and len(c.expected) == 64 for c in checks)


def test_status_lists_every_dataset(mnist_dir: Path) -> None:
    statuses = {s.name: s for s in dataset_status(mnist_dir.parent)}
    assert set(statuses) == {"mnist", "fashion-mnist", "cifar10", "cifar100", "digits", "synthetic"}
    mnist = statuses["mnist"]
    assert mnist.present and mnist.needs_files and mnist.location == str(mnist_dir)
    assert (mnist.files_found, mnist.files_expected) == (4, 4)
    assert statuses["digits"].present and not statuses["digits"].needs_files
    assert not statuses["cifar10"].present and statuses["cifar10"].files_found == 0


# --- small copies of real files, for the error paths -------------------------------------------


def _test_split_copy(source: Path, root: Path, name: str = "mnist") -> Path:
    """Copy the (small) test-split files of ``source`` into <root>/<name>/."""
    target = root / name
    target.mkdir(parents=True)
    for file in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(source / file, target / file)
    return target


def _gunzip(path: Path) -> bytes:
    with gzip.open(path, "rb") as handle:
        return handle.read()


def test_recompressed_file_still_verifies(mnist_dir: Path, tmp_path: Path) -> None:
    target = _test_split_copy(mnist_dir, tmp_path)
    labels = target / "t10k-labels-idx1-ubyte.gz"
    payload = _gunzip(labels)
    recompressed = gzip.compress(payload, compresslevel=1, mtime=12345)
    assert recompressed != labels.read_bytes()
    labels.write_bytes(recompressed)
    split = load_split("mnist", "test", tmp_path)
    assert split.labels[:5].tolist() == [7, 2, 1, 0, 4]
    # a file written as two gzip members (as concatenating .gz files gives) is fine too
    labels.write_bytes(gzip.compress(payload[:5000]) + gzip.compress(payload[5000:]))
    checks = {c.path.name: c for c in verify_dataset("mnist", tmp_path)}
    assert checks["t10k-labels-idx1-ubyte.gz"].status == "ok"


def test_uncompressed_files_are_accepted(mnist_dir: Path, tmp_path: Path) -> None:
    target = _test_split_copy(mnist_dir, tmp_path)
    for gz in target.glob("*.gz"):
        gz.with_suffix("").write_bytes(_gunzip(gz))
        gz.unlink()
    split = load_split("mnist", "test", tmp_path)
    assert split.images.shape == (10000, 1, 28, 28)
    checks = {c.path.name: c.status for c in verify_dataset("mnist", tmp_path)}
    assert checks["t10k-labels-idx1-ubyte"] == "ok"
    assert checks["train-images-idx3-ubyte.gz"] == "missing"


def test_flipped_byte_fails_checksum(mnist_dir: Path, tmp_path: Path) -> None:
    target = _test_split_copy(mnist_dir, tmp_path)
    labels = target / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(_gunzip(labels))
    assert payload[8] == 7
    payload[8] = 3  # still a valid label: only the checksum can tell
    labels.write_bytes(gzip.compress(bytes(payload)))

    with pytest.raises(DatasetError) as raised:
        load_split("mnist", "test", tmp_path)
    message = str(raised.value)
    assert str(labels) in message and MNIST_TEST_LABELS_SHA256 in message
    assert "robustlab data download mnist" in message
    assert load_split("mnist", "test", tmp_path, verify=False).labels[0] == 3
    checks = {c.path.name: c for c in verify_dataset("mnist", tmp_path)}
    assert checks["t10k-labels-idx1-ubyte.gz"].status == "mismatch"
    assert checks["t10k-images-idx3-ubyte.gz"].status == "ok"


def test_truncated_gzip_is_reported(mnist_dir: Path, tmp_path: Path) -> None:
    target = _test_split_copy(mnist_dir, tmp_path)
    images = target / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:100_000])
    for verify in (True, False):
        with pytest.raises(DatasetError, match="truncated") as raised:
            load_split("mnist", "test", tmp_path, verify=verify)
        assert str(images) in str(raised.value)
    checks = {c.path.name: c for c in verify_dataset("mnist", tmp_path)}
    assert checks[images.name].status == "unreadable"
    images.write_bytes(b"this is not gzip at all")
    with pytest.raises(DatasetError, match="corrupt gzip") as raised:
        load_split("mnist", "test", tmp_path)
    assert str(images) in str(raised.value)


def test_wrong_idx_header_names_the_file(mnist_dir: Path, tmp_path: Path) -> None:
    target = _test_split_copy(mnist_dir, tmp_path)
    labels = target / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(_gunzip(labels))
    payload[7] = 0x11  # count 10000 (0x2710) becomes 0x2711: one label short
    labels.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(DatasetError, match="truncated") as raised:
        load_split("mnist", "test", tmp_path, verify=False)
    assert str(labels) in str(raised.value) and "IDX" in str(raised.value)
    # labels and images from different splits
    shutil.copyfile(mnist_dir / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DatasetError, match="60000 labels but"):
        load_split("mnist", "test", tmp_path, verify=False)


def test_missing_files_name_file_dirs_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as raised:
        load_split("mnist", "train", tmp_path)
    message = str(raised.value)
    for expected in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        str(tmp_path / "mnist"),
        "robustlab data download mnist",
        "--data-root",
        DATA_ROOT_ENV,
    ):
        assert expected in message
    with pytest.raises(DatasetError) as raised:
        load_split("fashion-mnist", "test", tmp_path)
    assert "/usr/share/datasets/fashion-mnist" in str(raised.value)
    assert "dataset-fashion-mnist" in str(raised.value)
    checks = verify_dataset("mnist", tmp_path)
    assert [c.status for c in checks] == ["missing"] * 4
    assert str(tmp_path / "mnist") in checks[0].detail


def test_fashion_mnist_falls_back_to_debian_dir(
    fashion_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FASHION_MNIST, "extra_dirs", (fashion_dir,))
    status = {s.name: s for s in dataset_status(tmp_path)}["fashion-mnist"]
    assert status.present and status.location == str(fashion_dir)
    assert load_split("fashion-mnist", "test", tmp_path).labels[:2].tolist() == [9, 2]
    # a copy under the data root comes first
    _test_split_copy(fashion_dir, tmp_path, "fashion-mnist")
    status = {s.name: s for s in dataset_status(tmp_path)}["fashion-mnist"]
    assert status.location == f"{fashion_dir}, {tmp_path / 'fashion-mnist'}"


def test_unknown_names_list_the_valid_ones() -> None:
    for call in (
        lambda: dataset_info("imagenet"),
        lambda: load_split("imagenet", "train"),
        lambda: verify_dataset("imagenet"),
    ):
        with pytest.raises(RobustlabError) as raised:
            call()
        assert "imagenet" in str(raised.value) and "fashion-mnist" in str(raised.value)
    with pytest.raises(DatasetError, match="'validation'"):
        load_split("digits", "validation")  # type: ignore[arg-type]


def test_registry_and_info() -> None:
    assert DATASETS.names() == sorted(
        ["mnist", "fashion-mnist", "cifar10", "cifar100", "digits", "synthetic"]
    )
    for name in DATASETS.names():
        info = dataset_info(name)
        assert info.name == name
        assert len(info.class_names) == info.num_classes
        assert len(info.mean) == len(info.std) == info.input_shape[0]
    assert dataset_info("fashion-mnist").class_names[9] == "Ankle boot"
    assert dataset_info("cifar100").class_names[:3] == ("apple", "aquarium_fish", "baby")
    assert dataset_info("cifar100").class_names[-1] == "worm"
    assert not dataset_info("digits").needs_files and dataset_info("mnist").needs_files


def test_resolve_data_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "robustlab"
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root(str(tmp_path / "explicit")) == tmp_path / "explicit"
    assert resolve_data_root("~/data") == tmp_path / "home" / "data"
    monkeypatch.setenv(DATA_ROOT_ENV, "")
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "robustlab"


def test_verify_false_on_real_files_matches(mnist_dir: Path) -> None:
    verified = load_split("mnist", "test", mnist_dir.parent, verify=True)
    fast = load_split("mnist", "test", mnist_dir.parent, verify=False)
    assert torch.equal(verified.images, fast.images) and torch.equal(verified.labels, fast.labels)
