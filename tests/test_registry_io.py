import pytest

from robustlab.io import append_line, atomic_write_bytes, atomic_write_text
from robustlab.registry import Registry, UnknownNameError


def test_registry_lists_sorted_and_rejects_duplicates() -> None:
    registry: Registry[int] = Registry("thing")
    registry.add("b", 2, description="two")
    registry.register("a")(1)
    assert registry.names() == ["a", "b"]
    assert registry.get("b") == 2
    assert registry.entry("b").description == "two"
    assert "a" in registry and "c" not in registry
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a", 3)


def test_unknown_name_lists_known_names() -> None:
    registry: Registry[int] = Registry("thing")
    registry.add("alpha", 1)
    with pytest.raises(UnknownNameError, match="unknown thing 'beta'; known: alpha"):
        registry.get("beta")


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path) -> None:
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")

    def failing(handle) -> None:
        handle.write(b"partial")
        raise RuntimeError("disk full")

    from robustlab.io import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_atomic_write_bytes_and_append_line(tmp_path) -> None:
    atomic_write_bytes(tmp_path / "sub" / "a.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"\x00\x01"
    append_line(tmp_path / "log.jsonl", "one")
    append_line(tmp_path / "log.jsonl", "two\n")
    assert (tmp_path / "log.jsonl").read_text() == "one\ntwo\n"


def test_atomic_write_makes_ordinary_readable_files(tmp_path) -> None:
    path = atomic_write_text(tmp_path / "result.json", "{}")
    assert path.stat().st_mode & 0o777 == 0o644
