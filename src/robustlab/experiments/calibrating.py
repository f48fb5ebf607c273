"""The experiment's calibration step: the ε its trials with ``threat.eps: calibrated`` train
and attack at.

It runs on the weights at the end of a shared phase (so before any trial needs it), pools
the chosen models, and is saved as ``calibration.json`` in the experiment folder with what
it was computed from; a re-run with the same inputs reads it back instead of recomputing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from robustlab.config import CalibrationConfig, TrialConfig
from robustlab.data import load_split
from robustlab.device import resolve_device
from robustlab.errors import ConfigError
from robustlab.evaluate.calibration import calibrate
from robustlab.evaluate.labels import attack_key
from robustlab.experiments.shared import shared_prefix, shared_run
from robustlab.provenance import provenance
from robustlab.store.experiment import ExperimentDirectory
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory

CURVE_POINTS = 41


def calibrate_experiment(
    config: CalibrationConfig, trials: list[TrialConfig], out_dir: Path, folder: ExperimentDirectory
) -> dict[str, Any]:
    """Calibrate on the shared runs of ``trials`` (deduplicated); cached in ``folder``."""
    attack = config.attack.build()
    if not attack.accepts_budgets:
        raise ConfigError(
            f"calibration.attack must take per-example budgets (a PGD-family attack), got "
            f"{attack.name!r}"
        )
    runs = sorted(
        {
            shared_run(out_dir, prefix).path
            for trial in trials
            if (config.seeds is None or trial.seed in config.seeds)
            and (prefix := shared_prefix(trial)) is not None
        }
    )
    identity = {
        "calibration": config.model_dump(mode="json"),
        "runs": [path.name for path in runs],
    }
    previous = folder.read_calibration()
    if previous is not None and previous.get("identity") == identity:
        return previous
    device = resolve_device(trials[0].device)
    dataset = shared_prefix(trials[0])
    assert dataset is not None  # the config validator requires a shared after_phase
    test = load_split(dataset.data.dataset, "test", dataset.data.root)
    x = test.images[: config.images].to(device)
    y = test.labels[: config.images].to(device)
    models = [
        load_trained_model(RunDirectory(path), device, phase=config.after_phase).model
        for path in runs
    ]
    result = calibrate(
        models,
        x,
        y,
        attack,
        target_success=config.target_success,
        high=config.high,
        iterations=config.iterations,
        batch_size=config.batch_size,
        refine=config.refine,
    )
    grid = [config.high * index / (CURVE_POINTS - 1) for index in range(CURVE_POINTS)]
    record = {
        "identity": identity,
        "eps": result.eps,
        "target_success": config.target_success,
        "attack": attack_key(attack).replace(f"-eps{attack.budget:.4g}", ""),
        "resolution": result.resolution,
        "refine": config.refine,
        "examples": len(result.minimal_eps),
        "images_per_model": len(y),
        "models": [path.name for path in runs],
        "curve": result.curve(grid),
        "provenance": provenance(),
    }
    if not math.isfinite(result.eps):
        raise ConfigError(
            f"calibration: {attack_key(attack)} reaches {config.target_success:.0%} success "
            f"at no ε up to calibration.high={config.high}; raise calibration.high"
        )
    folder.write_calibration(record)
    return record
