"""`robustlab data verify` reports partial and absent datasets and fails on them (issue 20).

Before, a dataset with one file missing counted as absent and was skipped, and a missing data
root gave an empty table: both exited 0. Tests run on copies of the real MNIST files in a
temporary data root; the shared folder is only read.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from robustlab.data import verify_datasets
from robustlab.data.mnist import FASHION_MNIST
from robustlab.registry import UnknownNameError
from tests.test_cli import robustlab
from tests.test_data import IDX_FILES, real_dataset_dir

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


@pytest.fixture(autouse=True)
def no_system_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look in the data root only, so a system-wide Fashion-MNIST cannot change a verdict."""
    monkeypatch.setattr(FASHION_MNIST, "extra_dirs", ())


def mnist_root(tmp_path: Path, *, leave_out: tuple[str, ...] = ()) -> Path:
    """A data root holding copies of the real MNIST files, but for ``leave_out``."""
    source = real_dataset_dir("mnist")
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    for name in IDX_FILES:
        if name not in leave_out:
            shutil.copyfile(source / name, root / "mnist" / name)
    return root


def verdicts(root: Path, names: list[str] | None = None) -> dict[str, str]:
    return {v.name: v.state for v in verify_datasets(names, root).datasets}


def test_complete_dataset_passes_and_absent_ones_are_reported(tmp_path: Path) -> None:
    root = mnist_root(tmp_path)
    report = verify_datasets(None, root)
    states = {v.name: v.state for v in report.datasets}
    assert states == {
        "cifar10": "absent",
        "cifar100": "absent",
        "fashion-mnist": "absent",
        "mnist": "complete",
    }
    assert report.ok and report.problems() == []  # absent and not asked for: reported only
    [mnist] = [v for v in report.datasets if v.name == "mnist"]
    assert mnist.summary() == "4 of 4 files ok"


@pytest.mark.parametrize("names", [None, ["mnist"]])
def test_one_missing_file_is_an_incomplete_dataset(tmp_path: Path, names: list[str] | None) -> None:
    """Table row: data verify with one MNIST file missing exited 0 with an empty table."""
    root = mnist_root(tmp_path, leave_out=(TRAIN_IMAGES,))
    report = verify_datasets(names, root)
    assert verdicts(root, names)["mnist"] == "incomplete"
    assert not report.ok
    [problem] = report.problems()
    assert problem == f"mnist is incomplete: 3 of 4 files ok; missing: {TRAIN_IMAGES}"


def test_absent_dataset_asked_for_fails(tmp_path: Path) -> None:
    root = mnist_root(tmp_path)
    report = verify_datasets(["mnist", "cifar10"], root)
    assert verdicts(root, ["mnist", "cifar10"]) == {"mnist": "complete", "cifar10": "absent"}
    assert report.problems() == [
        "cifar10 is absent: no files found (robustlab data download cifar10)"
    ]


def test_corrupt_file_fails(tmp_path: Path) -> None:
    root = mnist_root(tmp_path)
    labels = root / "mnist" / TEST_LABELS
    payload = bytearray(gzip.decompress(labels.read_bytes()))
    payload[-1] ^= 1
    labels.write_bytes(gzip.compress(bytes(payload)))
    report = verify_datasets(None, root)
    assert verdicts(root)["mnist"] == "corrupt"
    assert report.problems() == [f"mnist is corrupt: 3 of 4 files ok; mismatch: {TEST_LABELS}"]


def test_no_data_root_says_so_and_fails(tmp_path: Path) -> None:
    """Table row: data verify with no data root exited 0 with an empty table."""
    root = tmp_path / "nowhere"
    for names in (None, ["mnist"]):
        report = verify_datasets(names, root)
        assert not report.root_exists and not report.ok
        assert f"the data root {root} does not exist" in report.problems()[0]


def test_empty_data_root_fails_rather_than_verify_nothing(tmp_path: Path) -> None:
    report = verify_datasets(None, tmp_path)
    assert report.root_exists and not report.found_any
    assert report.problems() == [
        f"no dataset files found under {tmp_path}: nothing was verified "
        "(robustlab data download NAME fetches one)"
    ]


def test_built_in_datasets_need_no_root(tmp_path: Path) -> None:
    report = verify_datasets(["digits", "synthetic"], tmp_path / "nowhere")
    assert [v.state for v in report.datasets] == ["built in", "built in"]
    assert report.ok


def test_unknown_dataset_is_refused_before_any_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="imagenet"):
        verify_datasets(["mnist", "imagenet"], tmp_path)


# --- As a user runs it -----------------------------------------------------------------------


def test_cli_fails_on_a_partial_dataset_it_found(tmp_path: Path) -> None:
    root = mnist_root(tmp_path, leave_out=(TRAIN_IMAGES,))
    result = robustlab("data", "verify", "--data-root", str(root), cwd=tmp_path, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "incomplete" in result.stdout and TRAIN_IMAGES in result.stdout
    assert "absent" in result.stdout  # the datasets with no files are listed as such
    assert f"mnist is incomplete: 3 of 4 files ok; missing: {TRAIN_IMAGES}" in result.stderr


def test_cli_without_a_data_root_says_so_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-root"
    monkeypatch.setenv("ROBUSTLAB_DATA", str(missing))
    result = robustlab("data", "verify", cwd=tmp_path, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the data root {missing} does not exist" in " ".join(result.stderr.split())


def test_cli_passes_on_complete_data(tmp_path: Path) -> None:
    root = mnist_root(tmp_path)
    result = robustlab("data", "verify", "mnist", "--data-root", str(root), cwd=tmp_path)
    assert "complete" in result.stdout and result.stdout.count("│ ok ") == 4
