import json
import os
import pickle

import pytest
import torch

from robustlab.errors import CheckpointError, TrainingDivergedError
from robustlab.store.checkpoint import load_training_state, load_weights
from robustlab.store.runs import RunDirectory
from robustlab.train import train_trial
from robustlab.train.objectives import ObjectiveOutput, StandardObjective
from tests.trial_factory import synthetic_trial


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_weights(RunDirectory(run_dir).final_weights)


def test_training_learns_and_writes_run_directory(tmp_path) -> None:
    result = train_trial(synthetic_trial(), tmp_path / "run")
    run = RunDirectory(result.run_dir)
    assert result.final["test_acc"] > 0.9
    epochs = [r for r in run.read_metrics() if r["event"] == "epoch"]
    assert [(r["phase"], r["epoch"], r["global_epoch"]) for r in epochs] == [
        ("first", 1, 1),
        ("first", 2, 2),
        ("second", 1, 3),
        ("second", 2, 4),
    ]
    assert run.read_config().trial == "synthetic"
    assert run.phase_weights("first").exists() and run.phase_weights("second").exists()
    results = json.loads(run.results_file.read_text())
    assert results["final"]["test_acc"] == epochs[-1]["test_acc"]
    assert results["parameters"] > 0 and results["provenance"]["torch"] == torch.__version__
    # The cosine schedule of the second phase decays within the phase.
    assert epochs[3]["lr"] < epochs[2]["lr"] < 0.05


def test_same_seed_same_result_other_seed_differs(tmp_path) -> None:
    first = train_trial(synthetic_trial(), tmp_path / "a")
    second = train_trial(synthetic_trial(), tmp_path / "b")
    other = train_trial(synthetic_trial(seed=1), tmp_path / "c")
    strip = lambda history: [  # noqa: E731
        {k: v for k, v in r.items() if "seconds" not in k and k != "time"} for r in history
    ]
    assert strip(first.history) == strip(second.history)
    for name, tensor in weights(first.run_dir).items():
        assert torch.equal(tensor, weights(second.run_dir)[name]), name
    assert strip(first.history) != strip(other.history)


def test_resume_from_each_epoch_matches_uninterrupted(tmp_path) -> None:
    reference = train_trial(synthetic_trial(), tmp_path / "reference")
    # Simulate a kill after epoch 1 (mid-phase) and after epoch 2 (phase boundary): keep the
    # run directory as it was then, with a stale metrics line past the checkpoint.
    for stop_after in (1, 2, 3):
        partial = synthetic_trial()
        run_dir = tmp_path / f"stop{stop_after}"
        _train_until(partial, run_dir, stop_after)
        resumed = train_trial(partial, run_dir, resume=True)
        assert resumed.final == reference.final, stop_after
        for name, tensor in weights(reference.run_dir).items():
            assert torch.equal(tensor, weights(run_dir)[name]), (stop_after, name)
        globals_ = [r["global_epoch"] for r in resumed.history if r["event"] == "epoch"]
        assert globals_ == [1, 2, 3, 4]


def _train_until(config, run_dir, epochs: int) -> None:
    """Train and stop right after ``epochs`` epochs, as a kill there would."""

    class Stop(Exception):
        pass

    from robustlab.train.trainer import TrainingReporter

    class Stopper(TrainingReporter):
        def epoch_done(self, record) -> None:
            if record["global_epoch"] == epochs:
                RunDirectory(run_dir).append_metrics({"event": "epoch", "global_epoch": 99})
                raise Stop

    with pytest.raises(Stop):
        train_trial(config, run_dir, reporter=Stopper())
    assert not RunDirectory(run_dir).is_finished


def test_existing_run_needs_resume_and_same_config(tmp_path) -> None:
    config = synthetic_trial()
    train_trial(config, tmp_path / "run")
    with pytest.raises(CheckpointError, match="pass --resume"):
        train_trial(config, tmp_path / "run")
    changed = synthetic_trial(seed=5)
    with pytest.raises(CheckpointError, match=r"seed \(recorded 0, now 5\)"):
        train_trial(changed, tmp_path / "run", resume=True)
    # Resuming a finished run returns its results without training again.
    again = train_trial(config, tmp_path / "run", resume=True)
    assert again.final["test_acc"] > 0.9


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    batches_per_first_epoch = 16  # 1000 synthetic images / batch 64

    class PoisonedObjective(StandardObjective):
        def __call__(self, model, x, y, step=None) -> ObjectiveOutput:
            output = super().__call__(model, x, y, step)
            calls["n"] += 1
            if calls["n"] > batches_per_first_epoch + 3:
                return ObjectiveOutput(loss=output.loss * float("nan"), logits=output.logits)
            return output

    monkeypatch.setattr(
        "robustlab.train.trainer.build_objective", lambda config: PoisonedObjective()
    )
    run = RunDirectory(tmp_path / "run")
    with pytest.raises(TrainingDivergedError) as raised:
        train_trial(synthetic_trial(), run.path)
    message = str(raised.value)
    assert "loss became nan" in message and "epoch 2, batch 4" in message
    assert str(run.last_checkpoint) in message
    state = load_training_state(run.last_checkpoint)
    assert state.global_epoch == 1
    assert all(torch.isfinite(t).all() for t in state.model.values())
    assert run.read_metrics()[-1]["event"] == "diverged"
    assert not run.is_finished


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_checkpoint_loading_refuses_pickled_code(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "last.pt"
    torch.save({"format": 1, "model": _Exploit()}, evil, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_training_state(evil)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_weights_file_is_a_clear_error(tmp_path) -> None:
    result = train_trial(synthetic_trial(phases=[{"name": "c", "epochs": 1}]), tmp_path / "r")
    final = RunDirectory(result.run_dir).final_weights
    final.write_bytes(final.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_weights(final)
