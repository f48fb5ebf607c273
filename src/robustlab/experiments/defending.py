"""The defenses experiment's evaluation of one trained trial: its defense under the naive and
the adaptive attack, same ε, same images, each with its sanity checks.

The adaptive figure is the per-example worst case over the naive and the adaptive attack (an
image counts as robust only if it survived both), so an adaptive attack that happens to be
weaker on some images can never make a defense look stronger than the naive one did; the
adaptive attack's own figure is kept beside it (``alone_robust_acc``).

Written to ``defense-evaluation.json`` in the trial's folder (atomically, under the trial's
lock), with the settings it was made with, so a re-run skips evaluated trials and refuses one
whose ``report:`` settings have since changed (a stale figure would otherwise be reported
under the new settings). A defense with something to fit is fitted once
and saved beside the weights (``robustlab.evaluate.defended_run``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.config import AttackConfig, ExperimentConfig, TrialConfig
from robustlab.data import load_split
from robustlab.defenses import DefendedModel, Gradients
from robustlab.device import resolve_device
from robustlab.errors import ConfigError
from robustlab.evaluate.defended import AttackPlan, deployed_answers, evaluate_plan
from robustlab.evaluate.defended_run import FitSettings, automatic_gradients, load_defended
from robustlab.evaluate.sanity import CheckSettings, run_checks
from robustlab.io import atomic_write_json
from robustlab.provenance import provenance
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.index import differing_fields
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory
from robustlab.train.trainer import TrainingReporter

EVALUATION_FILE = "defense-evaluation.json"


@dataclass(frozen=True)
class DefenseSettings:
    """What the kind's options say about one trial's evaluation (plain values, picklable)."""

    images: int
    batch_size: int
    naive: AttackConfig
    adaptive: AttackConfig
    gradients: dict[str, Any] | None
    """Explicit gradient options for the adaptive attack; None: chosen from the defense."""
    eot: int
    targets: int
    fit_images: int
    held_out_images: int
    checks: CheckSettings
    surrogate: str | None
    """Trial whose classifier is the transfer check's surrogate (None: no transfer check)."""

    def record(self) -> dict[str, Any]:
        """Plain values, as stored with an evaluation and compared on a re-run."""
        plain = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        plain["naive"] = self.naive.model_dump(mode="json")
        plain["adaptive"] = self.adaptive.model_dump(mode="json")
        plain["checks"] = dataclasses.asdict(self.checks)
        return plain


def evaluate_trial_defense(
    config: ExperimentConfig,
    trial: TrialConfig,
    settings: DefenseSettings,
    out: Path,
    reporter: TrainingReporter,
) -> dict[str, Any]:
    """The trial's defense evaluation, computed now or read back if already on disk."""
    folder = ExperimentDirectory(out / config.name)
    run = folder.trial(trial.trial)
    target = run.path / EVALUATION_FILE
    if target.exists():
        return read_evaluation(target, settings)
    with run.lock():
        reporter.status(f"{trial.trial}: evaluating its defense (naive and adaptive attacks)")
        result = _evaluate(run, trial, settings, folder)
        result["settings"] = settings.record()
        atomic_write_json(target, result)
    return result


def read_evaluation(path: Path, settings: DefenseSettings) -> dict[str, Any]:
    """The stored evaluation, refused if made with other settings. A file written before
    settings were stored (no ``settings`` key) is taken as it is."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    stored = data.get("settings")
    if stored is not None:
        differences = differing_fields(stored, json.loads(json.dumps(settings.record())))
        if differences:
            raise ConfigError(
                f"{path} was evaluated with other report settings; they differ in "
                + ", ".join(differences)
                + ". Restore them, or delete that file to evaluate the defense again"
            )
    return data


def _evaluate(
    run: RunDirectory, trial: TrialConfig, settings: DefenseSettings, folder: ExperimentDirectory
) -> dict[str, Any]:
    started = time.perf_counter()
    device = resolve_device(trial.device)
    fit = FitSettings(settings.fit_images, settings.held_out_images)
    loaded = load_defended(run, device, fit=fit, data_root=trial.data.root)
    trained, defended, fit_seconds = loaded.trained, loaded.model, loaded.fit_seconds
    test = load_split(trained.info.name, "test", trial.data.root)
    x = test.images[: settings.images].to(device)
    y = test.labels[: settings.images].to(device)
    specs = [defense.spec() for defense in trial.model.defenses]
    surrogate = _surrogate(folder, settings.surrogate, trial, device)
    naive = AttackPlan(attack=settings.naive.build())
    adaptive = AttackPlan(
        attack=settings.adaptive.build(),
        gradients=adaptive_gradients(defended, settings.gradients, settings.eot),
        targets=settings.targets,
    )
    predicted, rejected = deployed_answers(defended, x, trial.seed)
    with torch.no_grad():
        bare = trained.model(x).argmax(dim=1) == y
    result: dict[str, Any] = {
        "trial": trial.trial,
        "defenses": specs,
        "seed": trial.seed,
        "images": len(y),
        "clean": {
            "accuracy": round(float((predicted == y).float().mean()), 6),
            "classifier_accuracy": round(float(bare.float().mean()), 6),
            "false_positive_rate": round(float(rejected.float().mean()), 6)
            if defended.has_detectors
            else None,
        },
        "fit_seconds": fit_seconds,
    }
    held: torch.Tensor | None = None
    black_box: dict[tuple[float, str], float] = {}
    for label, plan in (("naive", naive), ("adaptive", adaptive)):
        scored = evaluate_plan(
            defended, x, y, plan, batch_size=settings.batch_size, seed=trial.seed
        )
        alone, own = scored.robust_accuracy, scored.robust
        if held is not None:  # the adaptive figure is the worst case over both attacks
            scored = dataclasses.replace(scored, robust=scored.robust & held)
        held = scored.robust
        checks = run_checks(
            defended,
            x,
            y,
            plan,
            scored.robust,
            settings=settings.checks,
            surrogate=surrogate,
            seed=trial.seed,
            batch_size=settings.batch_size,
            own=own,
            black_box_memo=black_box,
        )
        result[label] = {
            "attack": plan.describe(),
            **scored.summary(),
            "alone_robust_acc": round(alone, 6),
            "checks": [check.to_dict() for check in checks],
            "flagged": [check.name for check in checks if not check.passed],
        }
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["provenance"] = provenance()
    return result


def adaptive_gradients(
    defended: DefendedModel, explicit: dict[str, Any] | None, eot: int
) -> Gradients:
    """The gradients the config states, else the ones the defense calls for."""
    return automatic_gradients(defended, eot) if explicit is None else Gradients(**explicit)


def _surrogate(
    folder: ExperimentDirectory, name: str | None, trial: TrialConfig, device: torch.device
) -> nn.Module | None:
    if name is None or name == trial.trial:
        return None
    return load_trained_model(folder.trial(name), device).model
