"""A run's bookkeeping beside the training loop: where to resume, what to probe, what to report.

Kept out of ``trainer`` so that module reads as the loop alone; everything here reads the
config, a checkpoint or the run's metrics (``diverged`` and ``stop_phase_early`` also record
themselves there) and trains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustlab.config import PhaseConfig, TrialConfig
from robustlab.errors import CheckpointError, TrainingDivergedError
from robustlab.store.checkpoint import TrainingState, apply_weights, load_training_state
from robustlab.store.index import differing_fields
from robustlab.store.runs import RunDirectory, comparable_config


@dataclass
class Position:
    """Where the run continues: next phase index, epochs already done in it, global epoch."""

    phase_index: int = 0
    epochs_done: int = 0
    global_epoch: int = 0


def check_run_directory(run: RunDirectory, config: TrialConfig, resume: bool) -> TrialConfig:
    """Refuse to overwrite a run, and refuse to resume one with a different config or with a
    weights file or checkpoint whose bytes changed since they were written."""
    if not run.has_started:
        return config
    if not resume:
        raise CheckpointError(
            f"run directory {run.path} already holds a run; pass --resume to continue it "
            "or choose another --run-dir"
        )
    saved = run.read_config()
    differences = differing_fields(comparable_config(saved), comparable_config(config))
    if differences:
        raise CheckpointError(
            f"cannot resume {run.path}: its config differs from the requested one in "
            + ", ".join(differences)
        )
    run.verify()
    return saved


def position_after(config: TrialConfig, state: TrainingState) -> Position:
    """The epoch after a checkpoint; a phase's last epoch moves on to the next phase."""
    if state.phase_index >= len(config.phases):
        raise CheckpointError(
            f"checkpoint is at phase {state.phase_index + 1} but the config has "
            f"{len(config.phases)} phases"
        )
    phase = config.phases[state.phase_index]
    if state.epoch_in_phase >= phase.epochs:
        return Position(state.phase_index + 1, 0, state.global_epoch)
    return Position(state.phase_index, state.epoch_in_phase, state.global_epoch)


def train_eval_subset(config: TrialConfig, count: int) -> torch.Tensor | None:
    """Training images scored in eval mode after every epoch: none, all, or a seeded sample."""
    size = config.evaluation.train_subset
    if size == 0:
        return None
    if size is None or size >= count:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(config.seed + 1)
    return torch.randperm(count, generator=generator)[:size].sort().values


def probe_size(config: TrialConfig) -> int:
    """Training images the overfitting probe needs: the most any phase's check attacks."""
    sizes = [
        check.images
        for phase in config.phases
        if (check := getattr(phase.objective, "overfitting_check", None)) is not None
    ]
    return max(sizes, default=0)


def best_probe_accuracy(run: RunDirectory, phase_index: int) -> float | None:
    """Best PGD accuracy of the overfitting probe so far in this phase (for resumed runs)."""
    values = [
        record["overfitting"]["pgd_acc"]
        for record in run.read_metrics()
        if record.get("event") == "epoch"
        and record.get("phase_index") == phase_index
        and "overfitting" in record
    ]
    return max(values) if values else None


def final_metrics(run: RunDirectory) -> dict[str, Any]:
    """The last epoch's headline numbers, for the results file."""
    epochs = [record for record in run.read_metrics() if record.get("event") == "epoch"]
    if not epochs:
        raise CheckpointError(f"run {run.path} has no epoch records in {run.metrics_file.name}")
    last = epochs[-1]
    keys = ("test_acc", "test_loss", "train_acc", "train_loss", "train_eval_acc", "global_epoch")
    return {key: last[key] for key in keys if key in last}


def phase_end_summaries(run: RunDirectory) -> dict[str, Any]:
    """Each phase's strong evaluation without the per-step traces (those stay in metrics)."""
    summaries = {}
    for record in run.read_metrics():
        if record.get("event") == "phase_end":
            attacks = {
                name: {key: value for key, value in result.items() if key != "trace"}
                for name, result in record["attacks"].items()
            }
            summaries[record["phase"]] = {
                key: record[key] for key in ("images", "clean_acc", "worst_case_acc")
            } | {"attacks": attacks}
    return summaries


def diverged(run: RunDirectory, phase: PhaseConfig, epoch: int, batch: int, loss: float) -> None:
    """Record a non-finite training loss and stop the run, saying what to change."""
    kept = (
        f"the last good checkpoint is kept at {run.last_checkpoint}"
        if run.last_checkpoint.exists()
        else "no epoch had completed, so there is no checkpoint"
    )
    run.append_metrics(
        {"event": "diverged", "phase": phase.name, "epoch": epoch, "batch": batch, "loss": loss}
    )
    raise TrainingDivergedError(
        f"training loss became {loss} in phase {phase.name!r}, epoch {epoch}, batch {batch + 1}; "
        f"{kept}. Lower phases[].optimizer.lr (now {phase.optimizer.lr}) or set "
        "phases[].max_grad_norm, then start a new run."
    )


def stop_phase_early(
    run: RunDirectory,
    model: nn.Module,
    phase: PhaseConfig,
    phase_index: int,
    epoch: int,
    global_epoch: int,
    check: dict[str, Any],
) -> None:
    """Catastrophic overfitting: go back to the weights before this epoch and end the phase
    (Wong et al. 2020 stop early the same way)."""
    restored = "none (no earlier checkpoint)"
    if run.last_checkpoint.exists():
        last = run.last_checkpoint
        apply_weights(model, load_training_state(last).model, last)
        restored = f"weights after global epoch {global_epoch - 1}"
    run.append_metrics(
        {
            "event": "early_stop",
            "phase": phase.name,
            "phase_index": phase_index,
            "epoch": epoch,
            "global_epoch": global_epoch,
            "reason": "catastrophic overfitting: accuracy under PGD-"
            f"{check['pgd_steps']} fell to {check['pgd_acc']:.2%} while the training attack's "
            f"stayed at {check['train_attack_acc']:.2%}",
            "restored": restored,
        }
    )
