"""The plasticity map's measurements of one trained trial beyond what the trainer recorded:
robust fit (how well the model fits its own training attack's examples) and, if asked,
compression as a capacity probe (pruned and fine-tuned, quantised).

Robust fit is measured after training, in eval mode, on a fixed set of training images, so
it is comparable across models; the trainer's running accuracy (dropout on, weights moving
through the epoch) is not. Written to ``plasticity-evaluation.json`` in the trial's folder
(atomically, under the trial's lock) with the settings it was made with: a re-run skips it,
and refuses it if the ``report:`` settings have changed since.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.compression import prune_by_magnitude, quantize_weights
from robustlab.config import AttackConfig, ExperimentConfig, PhaseConfig, TrialConfig
from robustlab.device import resolve_device
from robustlab.errors import ConfigError
from robustlab.evaluate.accuracy import evaluate_accuracy
from robustlab.evaluate.robust import robust_accuracy
from robustlab.io import atomic_write_json
from robustlab.provenance import provenance
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.index import differing_fields
from robustlab.store.loading import load_trained_model
from robustlab.train.inputs import load_trial_data
from robustlab.train.objectives import TrainingStep, build_objective
from robustlab.train.reporter import TrainingReporter

EVALUATION_FILE = "plasticity-evaluation.json"


@dataclass(frozen=True)
class CompressionSettings:
    sparsities: tuple[float, ...]
    fine_tune_steps: int
    fine_tune_lr: float
    batch_size: int
    bits: tuple[int, ...]
    attack: AttackConfig
    images: int


@dataclass(frozen=True)
class ProbeSettings:
    """What the kind's options say about one trial's measurements (plain values, picklable)."""

    phase: str
    """The adversarial phase whose training attack robust fit uses (and fine-tuning repeats)."""
    training_attack: AttackConfig
    fit_images: int
    batch_size: int
    compression: CompressionSettings | None

    def record(self) -> dict[str, Any]:
        """Plain values, as stored with a measurement and compared on a re-run."""
        plain = dataclasses.asdict(self)
        plain["training_attack"] = self.training_attack.model_dump(mode="json")
        if self.compression is not None:
            plain["compression"]["attack"] = self.compression.attack.model_dump(mode="json")
            plain["compression"]["sparsities"] = list(self.compression.sparsities)
            plain["compression"]["bits"] = list(self.compression.bits)
        return plain


def probe_trial(
    config: ExperimentConfig,
    trial: TrialConfig,
    settings: ProbeSettings,
    out: Path,
    reporter: TrainingReporter,
) -> dict[str, Any]:
    """The trial's measurements, computed now or read back if already on disk."""
    run = ExperimentDirectory(out / config.name).trial(trial.trial)
    target = run.path / EVALUATION_FILE
    if target.exists():
        return read_probe(target, settings)
    with run.lock():
        reporter.status(
            f"{trial.trial}: robust fit" + (", compression" if settings.compression else "")
        )
        started = time.perf_counter()
        device = resolve_device(trial.device)
        model = load_trained_model(run, device).model
        data = load_trial_data(trial.data)
        result: dict[str, Any] = {
            "trial": trial.trial,
            "seed": trial.seed,
            "robust_fit": _robust_fit(model, data.train.images, data.train.labels, settings),
        }
        if settings.compression is not None:
            phase = next(p for p in trial.phases if p.name == settings.phase)
            result["compression"] = _compression(
                model,
                trial,
                phase,
                data.train.images,
                data.train.labels,
                data.test.images,
                data.test.labels,
                settings.compression,
                reporter,
            )
        result["seconds"] = round(time.perf_counter() - started, 3)
        result["settings"] = settings.record()
        result["provenance"] = provenance()
        atomic_write_json(target, result)
    return result


def read_probe(path: Path, settings: ProbeSettings) -> dict[str, Any]:
    """The stored measurements, refused if made with other settings."""
    return read_recorded(path, settings.record(), done="measured", redo="measure")


def read_recorded(path: Path, record: dict[str, Any], *, done: str, redo: str) -> dict[str, Any]:
    """A per-trial measurement file, refused if its stored settings differ from ``record``;
    ``done`` and ``redo`` (measured, measure) say in the error what the file holds."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    differences = differing_fields(data.get("settings"), json.loads(json.dumps(record)))
    if differences:
        raise ConfigError(
            f"{path} was {done} with other report settings; they differ in "
            + ", ".join(differences)
            + f". Restore them, or delete that file to {redo} the trial again"
        )
    return data


def _robust_fit(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: ProbeSettings
) -> dict[str, Any]:
    count = min(settings.fit_images, len(labels))
    device = next(model.parameters()).device
    x, y = images[:count].to(device), labels[:count].to(device)
    report = robust_accuracy(
        model,
        (x, y),
        {"training attack": settings.training_attack.build()},
        batch_size=settings.batch_size,
    )
    return {
        "images": count,
        "clean_accuracy": round(report.clean_accuracy, 6),
        "robust_accuracy": round(report.attacks[0].robust_accuracy, 6),
        "attack": report.attacks[0].parameters,
        "seconds": report.attacks[0].seconds,
    }


def _compression(
    model: nn.Module,
    trial: TrialConfig,
    phase: PhaseConfig,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    settings: CompressionSettings,
    reporter: TrainingReporter,
) -> dict[str, Any]:
    """The model itself, each pruned (and fine-tuned) copy and each quantised copy, all
    scored by the same attack on the same images."""
    attack = settings.attack.build()
    device = next(model.parameters()).device
    attacked = (test_x[: settings.images].to(device), test_y[: settings.images].to(device))

    def score(candidate: nn.Module) -> dict[str, float]:
        clean = evaluate_accuracy(candidate, test_x, test_y, device=device).accuracy
        robust = robust_accuracy(candidate, attacked, {"attack": attack}).attacks[0]
        return {
            "clean_accuracy": round(clean, 6),
            "robust_accuracy": round(robust.robust_accuracy, 6),
        }

    result: dict[str, Any] = {"images": len(attacked[1]), "attack": attack.describe()}
    result["original"] = score(model)
    pruned = []
    for sparsity in settings.sparsities:
        reporter.status(f"{trial.trial}: pruning to sparsity {sparsity:g}")
        candidate = copy.deepcopy(model)
        masks = prune_by_magnitude(candidate, sparsity)
        at_pruning = score(candidate) if settings.fine_tune_steps else None
        _fine_tune(candidate, masks.apply, trial, phase, train_x, train_y, settings)
        pruned.append(
            {
                "sparsity": sparsity,
                "achieved": round(masks.sparsity, 6),
                "before_fine_tuning": at_pruning,
                **score(candidate),
            }
        )
    result["pruned"] = pruned
    quantised = []
    for bits in settings.bits:
        candidate = copy.deepcopy(model)
        quantize_weights(candidate, bits)
        quantised.append({"bits": bits, **score(candidate)})
    result["quantised"] = quantised
    return result


def _fine_tune(
    model: nn.Module,
    after_step: Any,
    trial: TrialConfig,
    phase: PhaseConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: CompressionSettings,
) -> None:
    """``fine_tune_steps`` steps of the phase's own objective at full ε, masks re-applied
    after each; batches drawn with the trial's seed, so a re-run gives the same model."""
    if settings.fine_tune_steps == 0:
        return
    device = next(model.parameters()).device
    objective = build_objective(phase.objective)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.fine_tune_lr)
    generator = torch.Generator().manual_seed(trial.seed)
    model.train()
    for step in range(settings.fine_tune_steps):
        index = torch.randint(len(labels), (settings.batch_size,), generator=generator)
        x, y = images[index].to(device), labels[index].to(device)
        # past any ε warm-up; an index of its own so each step draws fresh random starts
        output = objective(
            model, x, y, TrainingStep(epoch=float(phase.epochs), index=(1 << 40) + step)
        )
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        after_step(model)
    model.eval()
