"""``robustlab attack RUN --attack ilcm --unbounded``: the images an unbounded targeted attack
draws toward every class, for a standard and a robust model side by side (thesis Ch. 4.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from robustlab.cli.console import console, print_table
from robustlab.device import resolve_device
from robustlab.errors import ConfigError
from robustlab.evaluate.accuracy import require_positive
from robustlab.store.runs import RunDirectory


def check_unbounded(attack_name: str, **given: Any) -> None:
    """--unbounded fixes the budget and the loss: refuse, by flag, what it would ignore."""
    if attack_name != "ilcm":
        raise ConfigError(
            f"--unbounded draws targeted ILCM images: use --attack ilcm (got --attack "
            f"{attack_name})"
        )
    if given.pop("eps") is not None:
        raise ConfigError("--unbounded sets ε = 1 (the whole [0, 1] box): drop --eps")
    flags = {"norm": "--norm", "restarts": "--restarts", "loss": "--loss", "param": "--param"}
    flags["early_stop"] = "--early-stop"
    ignored = [flag for key, flag in flags.items() if given[key]]
    if ignored:
        raise ConfigError(
            f"--unbounded takes --steps, --alpha, --n, --seed and --compare; drop "
            f"{', '.join(ignored)} (the attack is L∞ targeted BIM and runs every step)"
        )


def attack_unbounded(
    run_dir: Path,
    *,
    compare: Optional[Path],
    n: int,
    steps: Optional[int],
    alpha: Optional[float],
    seed: int,
    precision: str,
    batch_size: int,
    save_examples: bool,
    data_root: Optional[Path],
    device: str,
) -> None:
    from robustlab.evaluate import perceptual

    require_positive("--n", n, "starting images")
    require_positive("--batch-size", batch_size, "images per attack batch")
    if steps is not None:
        require_positive("--steps", steps, "attack iterations")
    if alpha is not None and not alpha > 0:
        raise ConfigError(f"--alpha must be > 0, got {alpha}")
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"--precision must be fp32 or bf16, got {precision!r}")
    outcome = perceptual.perceptual_alignment(
        RunDirectory(run_dir),
        count=n,
        steps=perceptual.DEFAULT_STEPS if steps is None else steps,
        alpha=perceptual.DEFAULT_ALPHA if alpha is None else alpha,
        seed=seed,
        precision="bf16" if precision == "bf16" else "fp32",
        device=resolve_device(device),
        compare=None if compare is None else RunDirectory(compare),
        data_root=data_root,
        batch_size=batch_size,
        save_figure=save_examples,
    )
    names = outcome.models[0].predictions.shape[1]
    print_table(
        f"{run_dir}: unbounded targeted ILCM from the first {len(outcome.starts)} test images "
        f"toward each of {names} classes",
        ["model", "weights", "targets reached", "mean L2", "worst target"],
        [
            [
                entry.label,
                Path(entry.weights).name,
                f"{float(entry.success().mean()):.1%}",
                f"{float(entry.mean_l2(outcome.starts).mean()):.3f}",
                f"{int(entry.success().argmin())} ({float(entry.success().min()):.0%})",
            ]
            for entry in outcome.models
        ],
    )
    console.print(f"results: {outcome.results_file}")
    if outcome.figure_file is not None:
        console.print(f"examples: {outcome.figure_file}")
