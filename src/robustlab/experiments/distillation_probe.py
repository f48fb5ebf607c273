"""Distillation as a capacity probe (thesis Ch. 5.2): each adversarially trained model of the
plasticity map teaches a narrower copy of itself, and the student's robustness is measured.

If robustness needs capacity, a narrower student should keep less of it than its teacher; and
comparing the student with the map's own model of the same shape, trained directly, says
whether a robust teacher passes on more than the student learns alone. The student is trained
from a fresh initialisation by adversarial distillation (Goldblum et al. 2020, "Adversarially
Robust Distillation", with the soft-label term alone): KL from the teacher's softened clean
prediction to the student's softened prediction on the training attack's example, the attack
run on the student, the loss scaled by T² (Hinton et al.) so that T does not change the step.

Written to ``plasticity-distillation.json`` in the teacher's trial folder (atomically, under
the trial's lock) with its settings, the student's weights beside it so that it can be
attacked again; a re-run skips it and refuses it if the settings changed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.config import AttackConfig, ExperimentConfig, ModelConfig, TrialConfig
from robustlab.data import dataset_info
from robustlab.device import resolve_device
from robustlab.errors import ConfigError
from robustlab.evaluate.accuracy import evaluate_accuracy
from robustlab.evaluate.robust import robust_accuracy
from robustlab.experiments.plasticity_probe import read_recorded
from robustlab.io import atomic_write_json
from robustlab.models import count_parameters, model_options
from robustlab.provenance import provenance
from robustlab.store.checkpoint import apply_weights, load_weights, save_weights
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.loading import build_for_dataset, load_trained_model
from robustlab.train.inputs import load_trial_data
from robustlab.train.objectives import TrainingStep, scheduled_attack, warmup_factor
from robustlab.train.reporter import TrainingReporter

DISTILLATION_FILE = "plasticity-distillation.json"
STUDENT_WEIGHTS = "plasticity-student.safetensors"
STUDENT_SEED_OFFSET = 2000
"""The student starts from the initialisation drawn with seed ``seed + 2000``."""
ATTACK_INDEX_OFFSET = 1 << 41
"""Added to the step number in the training attack's per-batch seed: apart from training's."""


@dataclass(frozen=True)
class DistillationSettings:
    """What the kind's options say about one trial's distillation (plain values, picklable)."""

    width_option: str
    """The model option that is width (``model.options.NAME``'s NAME)."""
    width_factor: float
    steps: int
    eps_warmup_steps: int
    lr: float
    batch_size: int
    temperature: float
    training_attack: AttackConfig
    """The teacher's own training attack, run on the student."""
    attack: AttackConfig
    """Scores teacher and student alike."""
    images: int

    def record(self) -> dict[str, Any]:
        """Plain values, as stored with a measurement and compared on a re-run."""
        plain = dataclasses.asdict(self)
        plain["training_attack"] = self.training_attack.model_dump(mode="json")
        plain["attack"] = self.attack.model_dump(mode="json")
        return plain


def student_model(teacher: ModelConfig, option: str, factor: float) -> ModelConfig:
    """The teacher's model with its width option scaled by ``factor`` (integer widths are
    rounded, and kept at 1 or more)."""
    defaults = model_options(teacher.name)
    if option not in teacher.options and option not in defaults:
        raise ConfigError(
            f"report.distillation: model {teacher.name!r} has no option {option!r} to narrow; "
            f"its options: {', '.join(defaults)}"
        )
    width = teacher.options.get(option, defaults.get(option))
    if isinstance(width, bool) or not isinstance(width, int | float):
        raise ConfigError(
            f"report.distillation: model {teacher.name!r} option {option!r} is {width!r}, "
            "not a number that a width factor can scale"
        )
    narrowed: float | int = width * factor
    if isinstance(width, int):
        narrowed = max(1, round(narrowed))
    return teacher.model_copy(update={"options": {**teacher.options, option: narrowed}})


def distil_trial(
    config: ExperimentConfig,
    trial: TrialConfig,
    settings: DistillationSettings,
    out: Path,
    reporter: TrainingReporter,
) -> dict[str, Any]:
    """The trial's distillation record, computed now or read back if already on disk."""
    run = ExperimentDirectory(out / config.name).trial(trial.trial)
    target = run.path / DISTILLATION_FILE
    if target.exists():
        return read_distillation(target, settings)
    with run.lock():
        reporter.status(f"{trial.trial}: distilling into a student {settings.width_factor:g}× wide")
        started = time.perf_counter()
        device = resolve_device(trial.device)
        teacher = load_trained_model(run, device).model
        data = load_trial_data(trial.data)
        shape, student = train_student(
            teacher, trial, settings, data.train.images, data.train.labels
        )
        save_weights(run.path / STUDENT_WEIGHTS, student.state_dict())
        attacked = (
            data.test.images[: settings.images].to(device),
            data.test.labels[: settings.images].to(device),
        )
        result: dict[str, Any] = {
            "trial": trial.trial,
            "seed": trial.seed,
            "student": {"model": shape.name, "options": shape.options, "weights": STUDENT_WEIGHTS},
            "images": len(attacked[1]),
            "attack": settings.attack.build().describe(),
            "teacher": _score(teacher, data.test.images, data.test.labels, attacked, settings),
            "distilled": {
                "parameters": count_parameters(student),
                **_score(student, data.test.images, data.test.labels, attacked, settings),
            },
        }
        result["seconds"] = round(time.perf_counter() - started, 3)
        result["settings"] = settings.record()
        result["provenance"] = provenance()
        atomic_write_json(target, result)
    return result


def train_student(
    teacher: nn.Module,
    trial: TrialConfig,
    settings: DistillationSettings,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[ModelConfig, nn.Module]:
    """The trial's student, distilled from ``teacher``: its shape and the trained model (the
    same every time for the same trial and settings)."""
    device = next(teacher.parameters()).device
    shape = student_model(trial.model, settings.width_option, settings.width_factor)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(trial.seed + STUDENT_SEED_OFFSET)
        student = build_for_dataset(shape, dataset_info(trial.data.dataset)).to(device)
    _distil(teacher, student, images, labels, trial.seed, settings)
    return shape, student


def load_student(trial_folder: Path, record: dict[str, Any], device: torch.device) -> nn.Module:
    """The distilled student a record describes, from its weights file (checked against its
    recorded sha256), in eval mode: for attacking it again with another attack."""
    config = ExperimentDirectory(trial_folder.parent).trial(trial_folder.name).read_config()
    shape = ModelConfig(name=record["student"]["model"], options=record["student"]["options"])
    student = build_for_dataset(shape, dataset_info(config.data.dataset))
    source = trial_folder / record["student"]["weights"]
    apply_weights(student, load_weights(source), source)
    return student.to(device).eval()


def read_distillation(path: Path, settings: DistillationSettings) -> dict[str, Any]:
    """The stored record, refused if made with other settings."""
    return read_recorded(path, settings.record(), done="distilled", redo="distil")


def _score(
    model: nn.Module,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    attacked: tuple[torch.Tensor, torch.Tensor],
    settings: DistillationSettings,
) -> dict[str, float]:
    device = next(model.parameters()).device
    clean = evaluate_accuracy(model, test_x, test_y, device=device).accuracy
    robust = robust_accuracy(model, attacked, {"attack": settings.attack.build()}).attacks[0]
    return {"clean_accuracy": round(clean, 6), "robust_accuracy": round(robust.robust_accuracy, 6)}


def _distil(
    teacher: nn.Module,
    student: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    settings: DistillationSettings,
) -> None:
    """``steps`` Adam steps of adversarial distillation; batches and attack starts drawn from
    the trial's seed, so a re-run gives the same student."""
    device = next(student.parameters()).device
    attack = settings.training_attack.build()
    optimizer = torch.optim.Adam(student.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)
    temperature = settings.temperature
    teacher.eval()
    student.train()
    for step in range(settings.steps):
        index = torch.randint(len(labels), (settings.batch_size,), generator=generator)
        x, y = images[index].to(device), labels[index].to(device)
        moment = TrainingStep(epoch=float(step), index=ATTACK_INDEX_OFFSET + step)
        scheduled = scheduled_attack(
            attack, warmup_factor(moment, settings.eps_warmup_steps), moment
        )
        x_adv = x if scheduled is None else scheduled(student, x, y)
        with torch.no_grad():
            soft = F.softmax(teacher(x).float() / temperature, dim=1)
        log_student = F.log_softmax(student(x_adv).float() / temperature, dim=1)
        loss = temperature**2 * F.kl_div(log_student, soft, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    student.eval()
