"""What robustlab writes is what it reads back: every weights file and checkpoint has a recorded
sha256 that every load and every resume checks; a changed, renamed or truncated file is one
clear error; a run from before the records loads and gets recorded; a write killed at any
point still resumes; temporary files of killed writes are removed on the next start."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as safetensors_load

from robustlab.errors import CheckpointError
from robustlab.store import integrity
from robustlab.store.checkpoint import load_training_state, load_weights, save_weights
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.integrity import sidecar
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory
from robustlab.train import train_trial
from robustlab.train.trainer import TrainingReporter
from tests.trial_factory import synthetic_trial

CPU = torch.device("cpu")
PHASES = [{"name": "first", "epochs": 1, "batch_size": 64}, {"name": "second", "epochs": 1}]


def tiny_trial():  # type: ignore[no-untyped-def]
    return synthetic_trial(phases=PHASES, evaluation={"batch_size": 500, "train_subset": 0})


class _Stop(Exception):
    pass


class _StopAfterFirstEpoch(TrainingReporter):
    """Stops as the second epoch starts: the first one's checkpoint and phase weights exist."""

    def epoch_started(self, phase, epoch, batches) -> None:  # type: ignore[no-untyped-def]
        if phase.name == "second":
            raise _Stop


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished run and one stopped after its first epoch (as a kill there would leave it)."""
    base = tmp_path_factory.mktemp("integrity")
    train_trial(tiny_trial(), base / "finished")
    with pytest.raises(_Stop):
        train_trial(tiny_trial(), base / "unfinished", reporter=_StopAfterFirstEpoch())
    return {"finished": base / "finished", "unfinished": base / "unfinished"}


def copy_of(trained: dict[str, Path], which: str, tmp_path: Path) -> RunDirectory:
    target = tmp_path / which
    shutil.copytree(trained[which], target)
    return RunDirectory(target)


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    where = len(data) // 2 if offset is None else offset
    data[where] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_weights_file_and_checkpoint_is_recorded_in_sha256sum_format(
    trained: dict[str, Path],
) -> None:
    run = RunDirectory(trained["finished"])
    files = list(run.weight_files())
    names = {path.name for path in files}
    assert names == {"last.pt", "phase-first.safetensors", "phase-second.safetensors"} | {
        "model.safetensors"
    }
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert sidecar(path).read_text() == f"{digest}  {path.name}\n"  # settled: one line


def test_a_flipped_byte_in_the_final_weights_is_refused_on_load(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    run = copy_of(trained, "finished", tmp_path)
    flip_byte(run.final_weights)  # in the tensor data: safetensors alone would load it
    for load in (lambda: load_weights(run.final_weights), lambda: load_trained_model(run, CPU)):
        with pytest.raises(CheckpointError) as raised:
            load()
        message = str(raised.value)
        assert str(run.final_weights) in message and "model.safetensors.sha256" in message
        assert "corrupt or truncated" in message and "delete the run folder" in message
    # A resume checks every file before it continues (here: returns the finished results).
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt"):
        train_trial(tiny_trial(), run.path, resume=True)


def test_a_flipped_byte_in_the_last_checkpoint_is_refused_on_load_and_resume(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    run = copy_of(trained, "unfinished", tmp_path)
    flip_byte(run.last_checkpoint)
    with pytest.raises(CheckpointError, match=r"checkpoint .*last\.pt is corrupt or truncated"):
        load_training_state(run.last_checkpoint)
    with pytest.raises(CheckpointError, match=r"last\.pt is corrupt") as raised:
        train_trial(tiny_trial(), run.path, resume=True)
    assert "last.pt.sha256 recorded" in str(raised.value)
    epochs = [r for r in run.read_metrics() if r.get("event") == "epoch"]
    assert [r["global_epoch"] for r in epochs] == [1]  # nothing was trained from it


def test_a_changed_phase_weights_file_stops_a_resume_before_any_training(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    run = copy_of(trained, "unfinished", tmp_path)
    flip_byte(run.phase_weights("first"))
    with pytest.raises(CheckpointError, match=r"phase-first\.safetensors is corrupt"):
        train_trial(tiny_trial(), run.path, resume=True)
    assert not run.final_weights.exists()


def test_a_renamed_tensor_is_one_error_naming_it(trained: dict[str, Path], tmp_path: Path) -> None:
    run = copy_of(trained, "finished", tmp_path)
    original = run.final_weights.read_bytes()
    name = sorted(safetensors_load(original))[-1]
    renamed = name[:-1] + ("X" if name[-1] != "X" else "Y")
    # Renamed in place (same length, so the file still parses): the record catches it.
    run.final_weights.write_bytes(original.replace(name.encode(), renamed.encode(), 1))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_trained_model(run, CPU)
    # Renamed and recorded again (or a run from before records): the model names it.
    tensors = safetensors_load(original)
    tensors[renamed] = tensors.pop(name)
    save_weights(run.final_weights, tensors)
    for legacy in (False, True):
        if legacy:
            sidecar(run.final_weights).unlink()
        with pytest.raises(CheckpointError) as raised:
            load_trained_model(run, CPU)
        message = str(raised.value)
        assert f"tensor {name} missing" in message and f"tensor {renamed} unknown" in message
        assert str(run.final_weights) in message and "Traceback" not in message


def test_a_run_from_before_records_loads_and_is_recorded_on_first_load(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    run = copy_of(trained, "unfinished", tmp_path)
    for path in run.weight_files():
        sidecar(path).unlink()
    expected = load_training_state(run.last_checkpoint)  # loads: no record to check
    digest = hashlib.sha256(run.last_checkpoint.read_bytes()).hexdigest()
    assert sidecar(run.last_checkpoint).read_text() == f"{digest}  last.pt\n"
    assert not sidecar(run.phase_weights("first")).exists()  # recorded when loaded, not before
    assert expected.global_epoch == 1

    # It resumes to exactly the run trained in one go, and every file it writes is recorded.
    result = train_trial(tiny_trial(), run.path, resume=True)
    reference = RunDirectory(trained["finished"])
    assert result.final == reference.read_results()["final"]
    for name, tensor in load_weights(reference.final_weights).items():
        assert torch.equal(tensor, load_weights(run.final_weights)[name]), name
    assert all(sidecar(path).exists() for path in run.weight_files() if "first" not in path.name)

    # From now on a change is caught like in any other run.
    flip_byte(run.final_weights)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_weights(run.final_weights)


def test_an_unreadable_record_is_an_error_naming_it(trained: dict[str, Path], tmp_path) -> None:
    run = copy_of(trained, "finished", tmp_path)
    sidecar(run.final_weights).write_text("not a digest\n")
    with pytest.raises(CheckpointError, match=r"integrity record .*model\.safetensors\.sha256"):
        load_weights(run.final_weights)


@pytest.mark.parametrize("killed", ["before the rename", "after the rename"])
def test_a_write_killed_between_file_and_record_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed: str
) -> None:
    """Either side of the rename, the record lists the file on disk, so resume never mistakes
    an interrupted write for corruption."""
    path = tmp_path / "model.safetensors"
    old = {"w": torch.zeros(3)}
    new = {"w": torch.ones(3)}
    save_weights(path, old)
    calls = {"n": 0}
    real_write = integrity.atomic_write_text
    real_replace = os.replace

    def write_record(target, text):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # the record's second step, after the rename
            raise KeyboardInterrupt
        return real_write(target, text)

    def replace(source, target):  # type: ignore[no-untyped-def]
        if killed == "before the rename" and Path(target) == path:
            raise KeyboardInterrupt
        return real_replace(source, target)

    monkeypatch.setattr(integrity, "atomic_write_text", write_record)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_weights(path, new)
    monkeypatch.undo()
    assert len(sidecar(path).read_text().splitlines()) == 2  # new hash listed, old one kept
    loaded = load_weights(path)
    assert torch.equal(loaded["w"], (old if killed == "before the rename" else new)["w"])
    save_weights(path, new)  # the next write settles the record to one hash again
    assert len(sidecar(path).read_text().splitlines()) == 1
    flip_byte(path, offset=len(path.read_bytes()) - 2)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_weights(path)


def test_leftover_temporary_files_are_removed_on_the_next_start(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    run = copy_of(trained, "unfinished", tmp_path)
    leftovers = [
        run.checkpoint_dir / ".last.pt.k3x_9a2q.tmp",
        run.checkpoint_dir / ".last.pt.sha256.0abcdefg.tmp",
        run.path / ".model.safetensors.zz1z2z3z.tmp",
        run.path / ".metrics.jsonl.abcdefgh.tmp",
    ]
    kept = [run.path / "notes.tmp", run.path / ".hidden", run.checkpoint_dir / "last.pt.tmp"]
    for path in leftovers + kept:
        path.write_bytes(b"half written")
    train_trial(tiny_trial(), run.path, resume=True)
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in kept)
    assert not list(run.path.rglob(".*.tmp"))  # and the run left none of its own

    folder = ExperimentDirectory(tmp_path / "experiment")
    folder.path.mkdir()
    leftover = folder.path / ".summary.json.a1b2c3d4.tmp"
    leftover.write_text("{")
    folder.remove_leftovers()
    assert not leftover.exists()


def test_a_copy_of_shared_phases_is_checked_against_the_original(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    origin = RunDirectory(trained["unfinished"])
    copy = copy_of(trained, "unfinished", tmp_path)
    for path in copy.weight_files():
        sidecar(path).unlink()  # as shutil copies only the files themselves
    copy.adopt_records(origin)
    assert all(sidecar(path).exists() for path in copy.weight_files())
    damaged = copy_of(trained, "unfinished", tmp_path / "damaged")
    sidecar(damaged.last_checkpoint).unlink()
    flip_byte(damaged.last_checkpoint)
    with pytest.raises(CheckpointError, match="is not an exact copy"):
        damaged.adopt_records(origin)
