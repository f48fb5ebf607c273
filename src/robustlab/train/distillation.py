"""Defensive distillation (Papernot et al. 2016): a student trained on a teacher's soft labels.

Both networks are trained at a high temperature T (the teacher with ``objective: {type:
standard, temperature: T}``, an earlier phase of the same trial) and the student is deployed
at T = 1, that is on its raw logits. Fitting softmax(z / T) drives the logits z to about T
times their usual scale, so at T = 1 the softmax saturates and its gradient with respect to
the input vanishes: the effect the paper credits for the defence (and the reason gradient
attacks on the logits, such as Carlini & Wagner's, are unaffected by it).

The trainer calls ``prepare_distillation`` when a phase starts: it loads the teacher from the
teacher phase's weights file (checked against its recorded sha256, like every load) and, for
a phase starting at its first epoch, re-initialises the student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.config import TrialConfig
from robustlab.config.objectives import DistillationObjectiveConfig
from robustlab.data import DatasetInfo
from robustlab.errors import CheckpointError, ConfigError
from robustlab.store.checkpoint import apply_weights, load_weights
from robustlab.store.loading import build_for_dataset
from robustlab.store.runs import RunDirectory
from robustlab.train.objectives import OBJECTIVES, Objective, ObjectiveOutput, TrainingStep

REINITIALISE_SEED_OFFSET = 1000
"""The student of phase i starts from the initialisation drawn with seed ``seed + 1000 + i``."""


class DistillationObjective(Objective):
    """CE between softmax(teacher(x) / T) and softmax(student(x) / T).

    The teacher runs in eval mode without gradients. The loss is not scaled by T² (Hinton et
    al. do, to mix soft and hard labels; the paper trains on soft labels alone): its gradient
    is about 1/T of the usual size, which Adam's per-parameter scaling absorbs; with SGD raise
    the learning rate.
    """

    def __init__(self, config: DistillationObjectiveConfig) -> None:
        self.temperature = config.temperature
        self.teacher_phase = config.teacher_phase
        self.teacher: nn.Module | None = None

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: TrainingStep | None = None
    ) -> ObjectiveOutput:
        if self.teacher is None:
            raise RuntimeError(
                f"distillation objective has no teacher: the trainer loads phase "
                f"{self.teacher_phase!r} into it (prepare_distillation) before training"
            )
        with torch.no_grad():
            soft = F.softmax(self.teacher(x).float() / self.temperature, dim=1)
        logits = model(x)
        loss = F.cross_entropy(logits.float() / self.temperature, soft)
        return ObjectiveOutput(loss=loss, logits=logits)


def prepare_distillation(
    objective: Objective,
    config: TrialConfig,
    phase_index: int,
    run: RunDirectory,
    model: nn.Module,
    info: DatasetInfo,
    *,
    fresh: bool,
) -> None:
    """Give a distillation phase its teacher and, when the phase starts afresh (``fresh``: at
    its first epoch, not on resume), the student its new initialisation; other phases pass."""
    settings = config.phases[phase_index].objective
    if not isinstance(settings, DistillationObjectiveConfig):
        return
    if not isinstance(objective, DistillationObjective):
        raise TypeError(f"a distillation phase needs a DistillationObjective, got {objective!r}")
    device = next(model.parameters()).device
    if settings.reinitialise and fresh:
        reinitialise(model, config, info, phase_index)
    objective.teacher = load_teacher(config, phase_index, run, info, device)


def reinitialise(
    model: nn.Module, config: TrialConfig, info: DatasetInfo, phase_index: int
) -> None:
    """Overwrite ``model``'s weights with a fresh initialisation, seeded by the trial's seed and
    the phase, in place (an optimiser built on its parameters stays valid). The global random
    state is forked around it, so the rest of the run draws what it would have drawn anyway."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + REINITIALISE_SEED_OFFSET + phase_index)
        fresh = build_for_dataset(config.model, info)
    model.load_state_dict(fresh.state_dict())


def load_teacher(
    config: TrialConfig,
    phase_index: int,
    run: RunDirectory,
    info: DatasetInfo,
    device: torch.device,
) -> nn.Module:
    """The frozen model at the end of the teacher phase, in eval mode on ``device``.

    Built under a forked random state: a resumed run builds it again mid-phase, and must draw
    from the global stream exactly what the uninterrupted run drew."""
    settings = config.phases[phase_index].objective
    name = getattr(settings, "teacher_phase", None)
    earlier = [phase.name for phase in config.phases[:phase_index]]
    if name not in earlier:
        raise ConfigError(
            f"phases.{phase_index}.objective.teacher_phase: {name!r} is not an earlier phase "
            f"of trial {config.trial} (earlier phases: {', '.join(earlier) or 'none'})"
        )
    source = run.phase_weights(name)
    if not source.exists():
        raise CheckpointError(
            f"the teacher of phase {config.phases[phase_index].name!r} needs {source}, the "
            f"weights at the end of phase {name!r}, and it is missing; train the run again"
        )
    with torch.random.fork_rng(devices=[]):  # its throwaway initialisation draws nothing
        teacher = build_for_dataset(config.model, info)
    apply_weights(teacher, load_weights(source), source)
    return teacher.to(device).eval().requires_grad_(False)


OBJECTIVES.add(
    "distillation",
    DistillationObjective,
    description="defensive distillation: a student on a teacher's soft labels at temperature T "
    "(Papernot et al. 2016)",
)
