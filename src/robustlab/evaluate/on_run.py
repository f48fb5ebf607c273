"""Attack a trained run directory: results JSON (and optionally a PNG grid) saved inside it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from robustlab.attacks.base import Attack
from robustlab.data import load_split
from robustlab.errors import ConfigError
from robustlab.evaluate.accuracy import require_positive
from robustlab.evaluate.gallery import save_example_grid
from robustlab.evaluate.labels import attack_key
from robustlab.evaluate.robust import RobustnessReport, robust_accuracy
from robustlab.io import atomic_write_json
from robustlab.modes import eval_mode
from robustlab.provenance import provenance
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory


@dataclass(frozen=True)
class AttackOutcome:
    report: RobustnessReport
    results_file: Path
    examples_file: Path | None


def attack_run(
    run: RunDirectory,
    attacks: Sequence[Attack],
    *,
    count: int,
    batch_size: int,
    device: torch.device,
    data_root: Path | None = None,
    save_examples: bool = False,
) -> AttackOutcome:
    """Attack the first ``count`` test images of the run's dataset with each of ``attacks``."""
    require_positive("count", count, "test images to attack")
    require_positive("batch_size", batch_size, "images per attack batch")
    if not attacks:
        raise ConfigError("attack_run needs at least one attack")
    trained = load_trained_model(run, device)
    for attack in attacks:  # before any image is loaded or attacked
        attack.check_budget(trained.info.input_shape)
    root = data_root or trained.config.data.root
    test = load_split(trained.info.name, "test", root)
    x, y = test.images[:count], test.labels[:count]
    report = robust_accuracy(
        trained.model, (x, y), list(attacks), device=device, batch_size=batch_size
    )
    label = "+".join(attack_label(attack, len(y)) for attack in attacks)
    results_file = atomic_write_json(
        run.path / "attacks" / f"{label}.json",
        {"weights": trained.weights, **report.to_dict(), "provenance": provenance()},
    )
    examples_file = None
    if save_examples:
        examples_file = _save_examples(
            run, trained.model, attacks[0], x, y, trained.info.class_names, label, device
        )
    return AttackOutcome(report=report, results_file=results_file, examples_file=examples_file)


def attack_label(attack: Attack, count: int) -> str:
    """A file name that says what was run: attack, norm, budget, steps, images, seed."""
    return f"{attack_key(attack)}-n{count}-seed{attack.seed}"


def _save_examples(
    run: RunDirectory,
    model: torch.nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    class_names: tuple[str, ...],
    label: str,
    device: torch.device,
    columns: int = 8,
) -> Path:
    x_show, y_show = x[:columns].to(device), y[:columns].to(device)
    x_adv = attack(model, x_show, y_show)
    with torch.no_grad(), eval_mode(model):
        clean_pred = model(x_show).argmax(dim=1)
        adv_pred = model(x_adv).argmax(dim=1)
    return save_example_grid(
        run.path / "attacks" / f"{label}.png",
        x_show.cpu(),
        x_adv.cpu(),
        y_show.cpu(),
        clean_pred.cpu(),
        adv_pred.cpu(),
        class_names,
        title=f"{label}: top clean (prediction), middle adversarial (red = changed), "
        "bottom perturbation",
    )
