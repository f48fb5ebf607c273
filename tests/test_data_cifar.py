"""CIFAR loading on tiny files written here in the canonical format, and the safe unpickler.

No real CIFAR files exist offline, so checksums are tested only for how a mismatch is reported.
"""

from __future__ import annotations

import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.data import dataset_status, load_split, verify_dataset
from robustlab.data.cifar_batch import parse_batch
from robustlab.data.unpickle import restricted_loads
from robustlab.errors import DatasetError

CIFAR10_BATCHES = [f"data_batch_{index}" for index in range(1, 6)]
Content = dict[str, tuple[np.ndarray, list[int]]]


def batch_bytes(data: np.ndarray, labels: list[int], label_key: bytes) -> bytes:
    """A batch pickled the way Python 3 writes it (protocol 4: numpy's _reconstruct path)."""
    batch = {
        b"batch_label": b"made up for a test",
        label_key: labels,
        b"data": data,
        b"filenames": [b"img_%d.png" % index for index in range(len(labels))],
    }
    return pickle.dumps(batch, protocol=4)


def python2_batch_bytes(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as the canonical files hold it: a protocol-2 pickle written by Python 2.

    Assembled opcode by opcode: Python 2 strings (SHORT_BINSTRING/BINSTRING), numpy's
    ``numpy.core.multiarray._reconstruct`` and the dtype/array state tuples.
    """

    def string(value: bytes) -> bytes:
        if len(value) < 256:
            return b"U" + bytes([len(value)]) + value
        return b"T" + struct.pack("<i", len(value)) + value

    def integer(value: int) -> bytes:
        return b"J" + struct.pack("<i", value)

    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    array += integer(0) + b"\x85" + string(b"b") + b"\x87R"
    array += b"(" + integer(1) + integer(data.shape[0]) + integer(data.shape[1]) + b"\x86"
    array += b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"
    array += b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1)
    array += integer(0) + b"tb"
    array += b"\x89" + string(data.tobytes()) + b"tb"
    label_list = b"](" + b"".join(integer(label) for label in labels) + b"e"
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list + b"u."


def tiny_images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3072), dtype=np.uint8)


def write_cifar10(folder: Path) -> Content:
    """Tiny CIFAR-10 batches (3 images each) in the extracted layout; returns their content."""
    folder.mkdir(parents=True)
    content = {}
    for seed, name in enumerate([*CIFAR10_BATCHES, "test_batch"]):
        data = tiny_images(3, seed)
        labels = [(seed + index) % 10 for index in range(3)]
        (folder / name).write_bytes(batch_bytes(data, labels, b"labels"))
        content[name] = (data, labels)
    meta = {b"label_names": [b"airplane"], b"num_vis": 3072, b"num_cases_per_batch": 3}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))
    return content


def make_archive(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


@pytest.fixture
def cifar10_root(tmp_path: Path) -> tuple[Path, Content]:
    return tmp_path, write_cifar10(tmp_path / "cifar10" / "cifar-10-batches-py")


def test_extracted_folder_loads_in_chw_order(cifar10_root: tuple[Path, Content]) -> None:
    root, content = cifar10_root
    train = load_split("cifar10", "train", root, verify=False)
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == torch.float32
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == [label for b in CIFAR10_BATCHES for label in content[b][1]]
    first = content["data_batch_1"][0][0]
    image = train.images[0]
    assert float(image[0, 0, 0]) == pytest.approx(first[0] / 255)  # red, top-left
    assert float(image[0, 0, 1]) == pytest.approx(first[1] / 255)  # red, next column
    assert float(image[0, 1, 0]) == pytest.approx(first[32] / 255)  # red, next row
    assert float(image[1, 0, 0]) == pytest.approx(first[1024] / 255)  # green, top-left
    assert float(image[2, 31, 31]) == pytest.approx(first[3071] / 255)  # blue, bottom-right
    last = content["data_batch_5"][0][2]
    np.testing.assert_allclose(train.images[14].reshape(-1).numpy(), last / 255, rtol=1e-6)
    test = load_split("cifar10", "test", root, verify=False)
    assert test.labels.tolist() == content["test_batch"][1]
    assert float(test.images.min()) >= 0.0 and float(test.images.max()) <= 1.0


def archive_root(root: Path, name: str = "cifar10") -> Path:
    """A second data root holding only the archive of <root>/<name>'s extracted folder."""
    folder = next((root / name).iterdir())
    target = root / "archived" / name
    target.mkdir(parents=True)
    archive = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
    make_archive(folder, target / archive)
    return root / "archived"


def test_archive_loads_the_same(cifar10_root: tuple[Path, Content]) -> None:
    root, _ = cifar10_root
    archived = archive_root(root)
    for split in ("train", "test"):
        from_folder = load_split("cifar10", split, root, verify=False)
        from_archive = load_split("cifar10", split, archived, verify=False)
        assert torch.equal(from_folder.images, from_archive.images)
        assert torch.equal(from_folder.labels, from_archive.labels)
    status = {s.name: s for s in dataset_status(archived)}["cifar10"]
    assert status.present and status.location == str(archived / "cifar10")
    assert (status.files_found, status.files_expected) == (1, 1)
    status = {s.name: s for s in dataset_status(root)}["cifar10"]
    assert status.present and status.location == str(root / "cifar10" / "cifar-10-batches-py")
    assert (status.files_found, status.files_expected) == (6, 6)


def test_checksum_mismatch_names_file_and_expected_md5(cifar10_root: tuple[Path, Content]) -> None:
    root, _ = cifar10_root
    with pytest.raises(DatasetError) as raised:
        load_split("cifar10", "train", root)
    message = str(raised.value)
    assert str(root / "cifar10" / "cifar-10-batches-py" / "data_batch_1") in message
    assert "c99cafc152244af753f735de768cd75f" in message
    assert "robustlab data download cifar10" in message
    with pytest.raises(DatasetError, match="40351d587109b95175f43aff81a1287e"):
        load_split("cifar10", "test", root)
    checks = verify_dataset("cifar10", root)
    assert [c.path.name for c in checks] == [*CIFAR10_BATCHES, "test_batch", "batches.meta"]
    assert {c.status for c in checks} == {"mismatch"} and checks[0].algorithm == "md5"

    archived = archive_root(root)
    archive = archived / "cifar10" / "cifar-10-python.tar.gz"
    with pytest.raises(DatasetError) as raised:
        load_split("cifar10", "test", archived)
    assert str(archive) in str(raised.value)
    assert "c58f30108f718f92721af3b95e74349a" in str(raised.value)
    assert [(c.path, c.status) for c in verify_dataset("cifar10", archived)] == [
        (archive, "mismatch")
    ]


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    for seed, name in enumerate(["train", "test", "meta"]):
        labels = [99, 0, 42, 7][: 4 - seed]
        batch = {b"data": tiny_images(len(labels), seed), b"fine_labels": labels}
        batch[b"coarse_labels"] = [label // 5 for label in labels]
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    train = load_split("cifar100", "train", tmp_path, verify=False)
    assert train.images.shape == (4, 3, 32, 32) and train.labels.tolist() == [99, 0, 42, 7]
    archived = archive_root(tmp_path, "cifar100")
    test = load_split("cifar100", "test", archived, verify=False)
    assert test.labels.tolist() == [99, 0, 42]
    with pytest.raises(DatasetError, match="16019d7e3df5f24257cddd939b257f8d"):
        load_split("cifar100", "train", tmp_path)
    with pytest.raises(DatasetError, match="eb9058c3a382ffc7106e4002c42a8d85"):
        load_split("cifar100", "train", archived)


def test_missing_cifar_names_archive_folder_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as raised:
        load_split("cifar10", "train", tmp_path)
    message = str(raised.value)
    for expected in (
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        str(tmp_path / "cifar10"),
        "robustlab data download cifar10",
        "--data-root",
    ):
        assert expected in message
    checks = verify_dataset("cifar10", tmp_path)
    assert [(c.path.name, c.status) for c in checks] == [("cifar-10-python.tar.gz", "missing")]


def test_truncated_or_incomplete_archive(cifar10_root: tuple[Path, Content]) -> None:
    root, _ = cifar10_root
    archive = archive_root(root) / "cifar10" / "cifar-10-python.tar.gz"
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt") as raised:
        load_split("cifar10", "test", archive.parent.parent, verify=False)
    assert str(archive) in str(raised.value)

    with tarfile.open(archive, "w:gz") as tar:
        tar.add(
            root / "cifar10" / "cifar-10-batches-py" / "data_batch_1",
            "cifar-10-batches-py/data_batch_1",
        )
    with pytest.raises(DatasetError, match="lacks cifar-10-batches-py/data_batch_2"):
        load_split("cifar10", "train", archive.parent.parent, verify=False)


def test_python2_pickles_like_the_canonical_files_parse() -> None:
    data = tiny_images(2, 0)
    batch = parse_batch(
        python2_batch_bytes(data, [3, 9]), "made-up", label_key=b"labels", num_classes=10
    )
    np.testing.assert_array_equal(batch.data, data)
    assert batch.labels.tolist() == [3, 9] and batch.labels.dtype == np.int64


class _RunsCommand:
    """Unpickling this calls os.system: what a malicious "CIFAR batch" would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def test_malicious_pickles_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = pickle.dumps({b"data": _RunsCommand(f"touch {marker}"), b"labels": []})
    with pytest.raises(DatasetError, match="refusing to unpickle") as raised:
        restricted_loads(evil, "/somewhere/data_batch_1")
    assert "system" in str(raised.value) and "/somewhere/data_batch_1" in str(raised.value)
    assert not marker.exists()

    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "test_batch").write_bytes(evil)
    with pytest.raises(DatasetError, match="refusing") as raised:
        load_split("cifar10", "test", tmp_path, verify=False)
    assert str(folder / "test_batch") in str(raised.value)
    assert not marker.exists()

    for payload in (
        pickle.dumps(eval),
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"cnumpy\nload\n(S'x.npy'\ntR.",
    ):
        with pytest.raises(DatasetError, match="refusing"):
            restricted_loads(payload, "x")


def test_damaged_pickles_and_bad_batches(tmp_path: Path) -> None:
    good = batch_bytes(tiny_images(2, 0), [1, 2], b"labels")
    with pytest.raises(DatasetError, match="not a readable CIFAR batch"):
        restricted_loads(good[: len(good) // 2], "x")

    def parse(batch: object) -> None:
        raw = pickle.dumps(batch, protocol=4)
        parse_batch(raw, "/d/data_batch_1", label_key=b"labels", num_classes=10)

    cases = [
        ([1, 2], "expected a pickled dict"),
        ({b"data": tiny_images(2, 0)}, "no b'labels' entry"),
        ({b"data": tiny_images(2, 0).astype(np.float32), b"labels": [1, 2]}, "uint8"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, "shape"),
        ({b"data": tiny_images(2, 0), b"labels": [1]}, "2 images but 1 labels"),
        ({b"data": tiny_images(2, 0), b"labels": [1, 10]}, "0..9"),
        ({b"data": tiny_images(2, 0), b"labels": [1, "2"]}, "integers"),
    ]
    for batch, problem in cases:
        with pytest.raises(DatasetError, match=problem) as raised:
            parse(batch)
        assert "/d/data_batch_1" in str(raised.value)
    labels_array = {b"data": tiny_images(2, 0), b"labels": np.array([4, 5], dtype=np.int32)}
    parse(labels_array)
