"""Phases trained once and reused: e.g. one standard-training checkpoint for every ε setting.

A trial's leading ``shared: true`` phases form a trial of their own, named by a digest of
everything that determines their result (dataset, model, seed, the phases with the attacks
run after each of their epochs, and the evaluation's sizes). It is trained under
``<out>/shared/<model>-s<seed>-<digest>``; a trial that starts from it gets a copy of its
checkpoint and metrics, runs its *own* end-of-phase evaluation of the shared phases (so
trials attacking at different ε can share one standard-training run) and continues with its
own phases. Training is deterministic, so the trial ends exactly where training it from
scratch would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from robustlab.config import PhaseEvaluationConfig, TrialConfig
from robustlab.data import load_split
from robustlab.device import resolve_device
from robustlab.store.experiment import SHARED_FOLDER
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory
from robustlab.train.inputs import choose_dataset
from robustlab.train.monitoring import evaluate_phase_end
from robustlab.train.trainer import TrainingReporter


def resolved(trial: TrialConfig) -> TrialConfig:
    """The trial with its dataset chosen (fallbacks resolved), as its run directory records."""
    chosen = choose_dataset(trial.data)
    data = trial.data.model_copy(update={"dataset": chosen, "fallback": []})
    return trial.model_copy(update={"data": data})


def shared_prefix(trial: TrialConfig) -> TrialConfig | None:
    """The trial's leading shared phases as a trial of their own, or None if there are none."""
    trial = resolved(trial)
    prefix = [phase for phase in trial.phases if phase.shared]
    if not prefix:
        return None
    phases = [
        phase.model_copy(
            update={
                "evaluation": PhaseEvaluationConfig(
                    attacks=trial.phase_attacks(phase), phase_end_attacks=[]
                )
            }
        )
        for phase in prefix
    ]
    identity = {
        "dataset": trial.data.dataset,
        # only when set, so the digests of prefixes trained on every image stay as they were
        **({"train_images": trial.data.train_images} if trial.data.train_images else {}),
        **(
            {"augment": trial.data.augment.model_dump(mode="json")}
            if trial.data.augment is not None
            else {}
        ),
        "model": {"name": trial.model.name, "options": trial.model.options},
        "seed": trial.seed,
        "phases": [phase.model_dump(mode="json") for phase in phases],
        "evaluation": trial.evaluation.global_knobs(),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return trial.model_copy(
        update={
            "experiment": SHARED_FOLDER,
            "trial": f"{trial.model.display_name}-s{trial.seed}-{digest}",
            "phases": phases,
            "model": trial.model.model_copy(update={"defenses": []}),  # training never sees them
            # The phases carry their resolved attack lists; nothing else may differ.
            "evaluation": trial.evaluation.model_copy(
                update={"attacks": None, "phase_end_attacks": []}
            ),
            "setting": None,
        }
    )


def shared_run(out_dir: Path, prefix: TrialConfig) -> RunDirectory:
    return RunDirectory(out_dir / SHARED_FOLDER / prefix.trial)


def start_from_shared(
    shared: RunDirectory,
    trial: TrialConfig,
    run: RunDirectory,
    reporter: TrainingReporter | None = None,
) -> None:
    """Make ``run`` a run of ``trial`` that has finished the shared phases.

    Everything is assembled in a sibling folder and renamed into place, so a kill half way
    leaves either no run or a complete one.
    """
    staging = run.path.with_name(f".{run.path.name}.starting")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "checkpoints").mkdir(parents=True)
    target = RunDirectory(staging)
    shutil.copy2(shared.metrics_file, target.metrics_file)
    for phase in (phase for phase in trial.phases if phase.shared):
        shutil.copy2(shared.phase_weights(phase.name), target.phase_weights(phase.name))
    shutil.copy2(shared.last_checkpoint, target.last_checkpoint)
    config = resolved(trial)
    target.write_config(config)
    _evaluate_shared_phases(target, config, reporter or TrainingReporter())
    os.replace(staging, run.path)


def _evaluate_shared_phases(
    run: RunDirectory, config: TrialConfig, reporter: TrainingReporter
) -> None:
    """The trial's end-of-phase evaluation of each shared phase, on that phase's weights."""
    device = resolve_device(config.device)
    test = load_split(config.data.dataset, "test", config.data.root)
    count = config.evaluation.attack_images
    x, y = test.images[:count].to(device), test.labels[:count].to(device)
    ends = 0
    for index, phase in enumerate(config.phases):
        ends += phase.epochs
        configs = config.phase_end_attacks(phase)
        if not phase.shared or not configs:
            continue
        model = load_trained_model(run, device, phase=phase.name).model
        epochs = [
            r for r in run.read_metrics() if r.get("event") == "epoch" and r["phase_index"] == index
        ]
        record = evaluate_phase_end(
            model,
            configs,
            x,
            y,
            phase=phase.name,
            phase_index=index,
            epoch=epochs[-1]["epoch"] if epochs else phase.epochs,
            global_epoch=epochs[-1]["global_epoch"] if epochs else ends,
            batch_size=config.evaluation.attack_batch_size,
            device=device,
            status=lambda message: reporter.status(f"{config.trial} (shared): {message}"),
        )
        if record is not None:
            run.append_metrics(record)
