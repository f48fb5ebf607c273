"""Downloads from mirrors served on 127.0.0.1 (or file://), using copies of the real MNIST files."""

from __future__ import annotations

import gzip
import shutil
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from robustlab.data import download_dataset, load_split, verify_dataset
from robustlab.data.mnist import MNIST
from robustlab.errors import DatasetError
from tests.test_data import IDX_FILES, real_dataset_dir


class _QuietHandler(SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        _QuietHandler.requests.append(self.path)


@pytest.fixture(scope="module")
def mirror_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """good/: copies of the real MNIST files; bad/: a corrupt and a truncated file."""
    source = real_dataset_dir("mnist")
    served = tmp_path_factory.mktemp("mirror")
    (served / "good").mkdir()
    for name in IDX_FILES:
        shutil.copyfile(source / name, served / "good" / name)
    (served / "bad").mkdir()
    (served / "bad" / IDX_FILES[0]).write_bytes(gzip.compress(b"not the MNIST images"))
    (served / "bad" / IDX_FILES[1]).write_bytes((source / IDX_FILES[1]).read_bytes()[:1000])
    return served


@pytest.fixture(scope="module")
def server(mirror_dir: Path) -> Iterator[str]:
    """An HTTP server on a free loopback port, serving ``mirror_dir``; yields its base URL."""
    handler = partial(_QuietHandler, directory=str(mirror_dir))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests must not be sent to a proxy configured in the environment."""
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_over_http_then_skip(server: str, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    paths = download_dataset(
        "mnist", tmp_path, mirrors=[f"{server}/good/"], progress=lambda d, t: calls.append((d, t))
    )
    assert paths == [tmp_path / "mnist" / name for name in IDX_FILES]
    assert [c.status for c in verify_dataset("mnist", tmp_path)] == ["ok"] * 4
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(IDX_FILES)
    assert calls[-1] == ((tmp_path / "mnist" / IDX_FILES[-1]).stat().st_size,) * 2
    assert load_split("mnist", "test", tmp_path).labels[:3].tolist() == [7, 2, 1]

    _QuietHandler.requests.clear()
    again = download_dataset("mnist", tmp_path, mirrors=[f"{server}/good"])
    assert again == paths and _QuietHandler.requests == []


def test_dead_mirror_falls_through_to_the_next(server: str, tmp_path: Path) -> None:
    dead = closed_port_url()
    paths = download_dataset("mnist", tmp_path, mirrors=[dead, f"{server}/good/"])
    assert len(paths) == 4 and all(c.ok for c in verify_dataset("mnist", tmp_path))


def test_corrupt_mirror_leaves_nothing_behind(server: str, tmp_path: Path) -> None:
    dead = closed_port_url()
    with pytest.raises(DatasetError) as raised:
        download_dataset("mnist", tmp_path, mirrors=[dead, f"{server}/bad/", f"{server}/none/"])
    message = str(raised.value)
    assert f"{dead}{IDX_FILES[0]}: failed" in message and "refused" in message
    assert f"{server}/bad/{IDX_FILES[0]}: checksum mismatch" in message
    assert MNIST.splits["train"].images.sha256 in message
    assert f"{server}/none/{IDX_FILES[0]}: HTTP 404" in message
    assert "--mirror" in message
    target = tmp_path / "mnist"
    assert not target.exists() or list(target.iterdir()) == []


def test_truncated_download_is_rejected(server: str, tmp_path: Path) -> None:
    target = tmp_path / "mnist"
    target.mkdir()
    shutil.copyfile(real_dataset_dir("mnist") / IDX_FILES[0], target / IDX_FILES[0])
    with pytest.raises(DatasetError, match="truncated gzip") as raised:
        download_dataset("mnist", tmp_path, mirrors=[f"{server}/bad/"])
    assert IDX_FILES[1] in str(raised.value)
    assert [p.name for p in target.iterdir()] == [IDX_FILES[0]]  # the valid file was kept


def test_file_mirror_and_uncompressed_copies(mirror_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "mnist"
    target.mkdir()
    raw = target / IDX_FILES[3].removesuffix(".gz")
    raw.write_bytes(gzip.decompress((mirror_dir / "good" / IDX_FILES[3]).read_bytes()))
    paths = download_dataset("mnist", tmp_path, mirrors=[(mirror_dir / "good").as_uri()])
    assert paths[3] == raw and not (target / IDX_FILES[3]).exists()
    assert [c.status for c in verify_dataset("mnist", tmp_path)] == ["ok"] * 4


def test_default_mirrors_are_the_canonical_ones() -> None:
    assert MNIST.default_mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert "http://yann.lecun.com/exdb/mnist/" in MNIST.default_mirrors
