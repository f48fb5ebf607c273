"""Train one trial through its phases, checkpointing every epoch so a killed run resumes.

Reading order: ``train_trial`` (set-up and resume) -> ``_run_phase`` (one phase) ->
``_train_epoch`` (one pass over the shuffled training set) -> ``_end_epoch`` (evaluate, log,
checkpoint; at a phase's end the strong evaluation; an early stop when the
catastrophic-overfitting check fires). Determinism on CPU for a fixed seed comes from three
seeded sources only: the global torch generator (initialisation, dropout), a dedicated
shuffling generator, and the order of operations; all are saved in the checkpoint. The run's
bookkeeping (where to resume, what to probe, the results summary) is in ``run_state``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.config import PhaseConfig, TrialConfig
from robustlab.device import resolve_device
from robustlab.evaluate.accuracy import evaluate_accuracy
from robustlab.models import count_parameters
from robustlab.precision import autocast
from robustlab.provenance import now_iso, provenance
from robustlab.store.checkpoint import (
    TrainingState,
    apply_weights,
    load_training_state,
    save_training_state,
    save_weights,
)
from robustlab.store.loading import build_for_dataset
from robustlab.store.runs import RunDirectory
from robustlab.train.augmentation import augment_batch
from robustlab.train.distillation import prepare_distillation
from robustlab.train.inputs import TrialData, choose_dataset, load_trial_data
from robustlab.train.monitoring import (
    build_attacks,
    check_overfitting,
    epoch_attack_metrics,
    evaluate_phase_end,
    fixed_subset,
)
from robustlab.train.objectives import Objective, TrainingStep, build_objective
from robustlab.train.reporter import TrainingReporter
from robustlab.train.run_state import (
    Position,
    best_probe_accuracy,
    check_run_directory,
    diverged,
    final_metrics,
    phase_end_summaries,
    position_after,
    probe_size,
    stop_phase_early,
    train_eval_subset,
)
from robustlab.train.schedules import build_optimizer, learning_rate, set_learning_rate

__all__ = ["TrainingReporter", "TrialResult", "train_trial"]


@dataclass
class TrialResult:
    run_dir: Path
    final: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def train_trial(
    config: TrialConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    reporter: TrainingReporter | None = None,
    data: TrialData | None = None,
) -> TrialResult:
    """Train ``config`` into ``run_dir``; with ``resume`` continue from its last checkpoint.

    The run folder is locked until this returns, so a second writer is refused rather than
    mixed in; what a killed writer left half written is removed first.
    """
    run = RunDirectory(Path(run_dir))
    with run.lock():
        run.remove_leftovers()
        return _train_locked(config, run, resume, reporter or TrainingReporter(), data)


def _train_locked(
    config: TrialConfig,
    run: RunDirectory,
    resume: bool,
    reporter: TrainingReporter,
    data: TrialData | None,
) -> TrialResult:
    # Record what actually runs, not what was asked for: the fallback dataset if one was taken.
    chosen = data.info.name if data is not None else choose_dataset(config.data)
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"dataset": chosen, "fallback": []})}
    )
    config = check_run_directory(run, config, resume)
    if run.is_finished:
        return TrialResult(run.path, run.read_results()["final"], run.read_metrics())

    device = resolve_device(config.device)
    data = data or load_trial_data(config.data)

    torch.manual_seed(config.seed)
    model = build_for_dataset(config.model, data.info).to(device)
    shuffle_rng = torch.Generator().manual_seed(config.seed)
    position = Position()
    train_seconds = 0.0
    saved_optimizer: dict[str, Any] | None = None
    saved_objective: dict[str, Any] | None = None

    if run.last_checkpoint.exists():
        state = load_training_state(run.last_checkpoint)
        apply_weights(model, state.model, run.last_checkpoint)
        torch.set_rng_state(state.torch_rng)
        shuffle_rng.set_state(state.shuffle_rng)
        if state.cuda_rng is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state.cuda_rng)
        position = position_after(config, state)
        train_seconds = state.train_seconds
        if position.epochs_done > 0:  # mid-phase: the phase's optimiser and objective go on
            saved_optimizer, saved_objective = state.optimizer, state.objective
        run.truncate_metrics(state.global_epoch)
    else:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(config)
        run.truncate_metrics(0)

    train_images = data.train.images.to(device)
    train_labels = data.train.labels.to(device)
    subset = train_eval_subset(config, len(train_labels))
    attacked = slice(0, config.evaluation.attack_images)
    probe = fixed_subset(len(train_labels), probe_size(config), config.seed + 2).to(device)
    reporter.run_started(config, data, position.global_epoch)

    context = _TrialContext(
        config=config,
        run=run,
        model=model,
        device=device,
        data=data,
        train_images=train_images,
        train_labels=train_labels,
        train_subset=subset,
        shuffle_rng=shuffle_rng,
        reporter=reporter,
        train_seconds=train_seconds,
        attack_images=data.test.images[attacked].to(device),
        attack_labels=data.test.labels[attacked].to(device),
        probe=probe,
    )
    for phase_index in range(position.phase_index, len(config.phases)):
        start = position.epochs_done if phase_index == position.phase_index else 0
        saved = (saved_optimizer, saved_objective) if start > 0 else (None, None)
        _run_phase(context, phase_index, start, *saved)

    final = final_metrics(run)
    phase_ends = phase_end_summaries(run)
    results = {
        "experiment": config.experiment,
        "trial": config.trial,
        "model": config.model.name,
        "parameters": count_parameters(model),
        "dataset": data.info.name,
        "seed": config.seed,
        "epochs": config.total_epochs,
        "train_seconds": round(context.train_seconds, 3),
        "final": final,
        "phase_end": phase_ends,
        "early_stops": [r for r in run.read_metrics() if r.get("event") == "early_stop"],
        "finished": now_iso(),
        "provenance": provenance(),
    }
    save_weights(run.final_weights, model.state_dict())
    run.write_results(results)
    return TrialResult(run.path, final, run.read_metrics())


@dataclass
class _TrialContext:
    config: TrialConfig
    run: RunDirectory
    model: nn.Module
    device: torch.device
    data: TrialData
    train_images: torch.Tensor
    train_labels: torch.Tensor
    train_subset: torch.Tensor | None
    shuffle_rng: torch.Generator
    reporter: TrainingReporter
    train_seconds: float
    attack_images: torch.Tensor
    """The first ``evaluation.attack_images`` test images: attacked after every epoch."""
    attack_labels: torch.Tensor
    probe: torch.Tensor
    """Indices of the training images the catastrophic-overfitting check attacks."""


@dataclass
class _PhaseState:
    """What one phase carries from epoch to epoch."""

    index: int
    config: PhaseConfig
    optimizer: torch.optim.Optimizer
    objective: Objective
    epoch_attacks: dict[str, Any]
    best_probe_pgd_acc: float | None


def _run_phase(
    ctx: _TrialContext,
    phase_index: int,
    start_epoch: int,
    optimizer_state: dict[str, Any] | None,
    objective_state: dict[str, Any] | None,
) -> None:
    phase = ctx.config.phases[phase_index]
    objective = build_objective(phase.objective)
    prepare_distillation(
        objective,
        ctx.config,
        phase_index,
        ctx.run,
        ctx.model,
        ctx.data.info,
        fresh=start_epoch == 0,
    )
    if objective_state is not None:
        objective.load_state_dict(objective_state)
    optimizer = build_optimizer(phase.optimizer, ctx.model.parameters())
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    state = _PhaseState(
        index=phase_index,
        config=phase,
        optimizer=optimizer,
        objective=objective,
        epoch_attacks=build_attacks(ctx.config.phase_attacks(phase)),
        best_probe_pgd_acc=best_probe_accuracy(ctx.run, phase_index),
    )
    for epoch in range(start_epoch + 1, phase.epochs + 1):
        started = time.perf_counter()
        train_loss, train_acc, lr = _train_epoch(ctx, state, epoch)
        seconds = time.perf_counter() - started
        ctx.train_seconds += seconds
        if _end_epoch(ctx, state, epoch, train_loss, train_acc, lr, seconds):
            break


def _global_epoch(config: TrialConfig, phase_index: int, epoch: int) -> int:
    return sum(p.epochs for p in config.phases[:phase_index]) + epoch


def _train_epoch(ctx: _TrialContext, state: _PhaseState, epoch: int) -> tuple[float, float, float]:
    phase, optimizer, objective = state.config, state.optimizer, state.objective
    count = len(ctx.train_labels)
    order = torch.randperm(count, generator=ctx.shuffle_rng).to(ctx.device)
    batches = math.ceil(count / phase.batch_size)
    global_epoch = _global_epoch(ctx.config, state.index, epoch)
    ctx.reporter.epoch_started(phase, epoch, batches)
    ctx.model.train()
    objective.start_epoch()
    loss_sum = torch.zeros((), device=ctx.device)
    correct = torch.zeros((), device=ctx.device, dtype=torch.long)
    lr = phase.optimizer.lr
    for batch in range(batches):
        index = order[batch * phase.batch_size : (batch + 1) * phase.batch_size]
        x, y = ctx.train_images[index], ctx.train_labels[index]
        position = epoch - 1 + batch / batches
        lr = learning_rate(phase.schedule, phase.optimizer.lr, position, phase.epochs)
        set_learning_rate(optimizer, lr)
        # Unique per batch and the same on resume: seeds the training attack's random start.
        step = TrainingStep(epoch=position, index=(global_epoch << 20) + batch)
        if ctx.config.data.augment is not None:
            x = augment_batch(x, ctx.config.data.augment, ctx.config.seed, step.index)
        for _ in range(objective.replays):
            with autocast(ctx.device, phase.precision):
                output = objective(ctx.model, x, y, step)
            loss_value = output.loss.item()
            if not math.isfinite(loss_value):
                diverged(ctx.run, phase, epoch, batch, loss_value)
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()  # type: ignore[no-untyped-call]
            objective.after_backward()
            if phase.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(ctx.model.parameters(), phase.max_grad_norm)
            optimizer.step()
            loss_sum += output.loss.detach() * len(y)
            correct += (output.logits.detach().argmax(dim=1) == y).sum()
        ctx.reporter.batch_done(loss_value)
    seen = count * objective.replays
    return loss_sum.item() / seen, correct.item() / seen, lr


def _end_epoch(
    ctx: _TrialContext,
    state: _PhaseState,
    epoch: int,
    train_loss: float,
    train_acc: float,
    lr: float,
    train_seconds: float,
) -> bool:
    """Evaluate, log and checkpoint one epoch; True when the phase stops early."""
    phase, phase_index = state.config, state.index
    started = time.perf_counter()
    evaluation = ctx.config.evaluation
    batch_size = evaluation.batch_size
    test = evaluate_accuracy(
        ctx.model, ctx.data.test.images, ctx.data.test.labels, batch_size=batch_size
    )
    global_epoch = _global_epoch(ctx.config, phase_index, epoch)
    record: dict[str, Any] = {
        "event": "epoch",
        "phase": phase.name,
        "phase_index": phase_index,
        "epoch": epoch,
        "global_epoch": global_epoch,
        "lr": lr,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": test.loss,
        "test_acc": test.accuracy,
    }
    if ctx.train_subset is not None:
        scored = evaluate_accuracy(
            ctx.model,
            ctx.train_images[ctx.train_subset],
            ctx.train_labels[ctx.train_subset],
            batch_size=batch_size,
        )
        record["train_eval_acc"] = scored.accuracy
        record["train_eval_loss"] = scored.loss
    record["attacks"] = epoch_attack_metrics(
        ctx.model,
        state.epoch_attacks,
        ctx.attack_images,
        ctx.attack_labels,
        batch_size=evaluation.attack_batch_size,
        device=ctx.device,
    )
    stop = False
    check = getattr(phase.objective, "overfitting_check", None)
    if check is not None:
        probe = check_overfitting(
            ctx.model,
            state.objective,
            check,
            ctx.train_images[ctx.probe[: check.images]],
            ctx.train_labels[ctx.probe[: check.images]],
            state.best_probe_pgd_acc,
            batch_size=evaluation.attack_batch_size,
            device=ctx.device,
        )
        record["overfitting"] = probe
        best = state.best_probe_pgd_acc
        state.best_probe_pgd_acc = max(best or 0.0, probe["pgd_acc"])
        stop = bool(probe["flagged"]) and check.action == "stop"
    record["train_seconds"] = round(train_seconds, 3)
    record["eval_seconds"] = round(time.perf_counter() - started, 3)
    record["time"] = now_iso()

    # Metrics first, then the checkpoint: a kill in between leaves records past the
    # checkpoint, which resume drops and recomputes.
    ctx.run.append_metrics(record)
    ctx.reporter.epoch_done(record)  # before the phase-end evaluation, so the log reads in order
    if stop:
        where = (state.config, state.index, epoch, global_epoch)
        stop_phase_early(ctx.run, ctx.model, *where, record["overfitting"])
    last_of_phase = stop or epoch == phase.epochs
    if last_of_phase:
        _evaluate_phase_end(ctx, state, epoch, global_epoch)
    save_training_state(
        ctx.run.last_checkpoint,
        TrainingState(
            model=ctx.model.state_dict(),
            optimizer=state.optimizer.state_dict(),
            phase_index=phase_index,
            epoch_in_phase=phase.epochs if stop else epoch,
            global_epoch=global_epoch,
            torch_rng=torch.get_rng_state(),
            shuffle_rng=ctx.shuffle_rng.get_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            train_seconds=ctx.train_seconds,
            objective=state.objective.state_dict(),
        ),
    )
    if last_of_phase:
        save_weights(ctx.run.phase_weights(phase.name), ctx.model.state_dict())
    return stop


def _evaluate_phase_end(
    ctx: _TrialContext, state: _PhaseState, epoch: int, global_epoch: int
) -> None:
    record = evaluate_phase_end(
        ctx.model,
        ctx.config.phase_end_attacks(state.config),
        ctx.attack_images,
        ctx.attack_labels,
        phase=state.config.name,
        phase_index=state.index,
        epoch=epoch,
        global_epoch=global_epoch,
        batch_size=ctx.config.evaluation.attack_batch_size,
        device=ctx.device,
        status=ctx.reporter.status,
    )
    if record is not None:
        ctx.run.append_metrics(record)
