"""UPSET against targeted PGD at the same L∞ ε and the same number of steps.

Run: ``python benchmarks/upset_vs_pgd.py`` (built-in 8×8 digits, no files needed; ``--dataset
mnist`` needs real MNIST under ``ROBUSTLAB_DATA`` or ``--data``). It trains thesis-shallow with
robustlab's trainer (in a temporary folder unless ``--run-dir`` names one to reuse), draws one
target per test image (uniform over the other classes, seeded), and for each ε runs UPSET
(one learned perturbation per target class, shared by every image) and PGD (one perturbation
per image) for the same number of steps. Both see the same images and targets; the success
is the share of images classified as their target. Writes benchmarks/results/upset-vs-pgd.json.

UPSET's perturbation is universal per class, so at equal ε it is expected to be weaker than
PGD: the point of the measurement is *how much* weaker, which docs/attacks.md quotes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.attacks import PGD, Attack
from robustlab.attacks.upset import UPSET
from robustlab.config import TrialConfig, parse_config
from robustlab.data import load_split
from robustlab.io import atomic_write_json
from robustlab.provenance import provenance
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory
from robustlab.train import train_trial

TRAINING = {
    "digits": {"epochs": 15, "batch_size": 64},
    "mnist": {"epochs": 1, "batch_size": 128},
}
"""As the test fixtures train them: ~97% (digits) and ~98.5% (MNIST) clean accuracy."""


def train_model(dataset: str, data_root: Path | None, run_dir: Path) -> nn.Module:
    data: dict[str, Any] = {"dataset": dataset}
    if data_root is not None:
        data["root"] = str(data_root)
    raw = {
        "trial": f"bench-{dataset}-shallow",
        "data": data,
        "model": {"name": "thesis-shallow"},
        "device": "cpu",
        "phases": [{"name": "clean", **TRAINING[dataset]}],
        "evaluation": {"train_subset": 0},
    }
    config = parse_config(TrialConfig, raw, source="benchmarks/upset_vs_pgd.py")
    train_trial(config, run_dir, resume=True)
    return load_trained_model(RunDirectory(run_dir), torch.device("cpu")).model


def other_class(y: torch.Tensor, classes: int, seed: int) -> torch.Tensor:
    """A target per image, uniform over the classes other than its label."""
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, classes, y.shape, generator=generator)
    return (y + shift) % classes


def measure(
    model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor
) -> dict[str, Any]:
    started = time.perf_counter()
    x_adv = attack(model, x, y, target=target)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        predicted = model(x_adv).argmax(dim=1)
    delta = (x_adv - x).flatten(1)
    return {
        "attack": attack.describe(),
        "targeted_success": float((predicted == target).float().mean()),
        "misclassified": float((predicted != y).float().mean()),
        "mean_linf": float(delta.abs().amax(dim=1).mean()),
        "mean_l2": float(delta.norm(dim=1).mean()),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=sorted(TRAINING), default="digits")
    parser.add_argument("--data", type=Path, default=None, help="data root (MNIST)")
    parser.add_argument("--run-dir", type=Path, default=None, help="reuse/keep the trained model")
    parser.add_argument("--n", type=int, default=360, help="first N test images")
    parser.add_argument("--steps", type=int, default=100, help="steps of both attacks")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--seed", type=int, default=0, help="targets and attack seeds")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/upset-vs-pgd.json"))
    args = parser.parse_args()
    if args.n < 1 or args.steps < 1:
        sys.exit("--n and --steps must be >= 1")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    scratch = None if args.run_dir else Path(tempfile.mkdtemp(prefix="robustlab-upset-"))
    run_dir: Path = args.run_dir or (scratch or Path()) / "run"
    try:
        model = train_model(args.dataset, args.data, run_dir)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    model.eval()
    test = load_split(args.dataset, "test", args.data)
    x, y = test.images[: args.n], test.labels[: args.n]
    with torch.no_grad():
        logits = model(x)
    clean = logits.argmax(dim=1)
    target = other_class(y, logits.shape[1], args.seed)
    rows = []
    for eps in args.eps:
        for attack in (
            UPSET(eps=eps, steps=args.steps, seed=args.seed),
            PGD(eps=eps, steps=args.steps, seed=args.seed),
        ):
            row = {"eps": eps, **measure(model, attack, x, y, target)}
            rows.append(row)
            print(
                f"eps {eps:<5g} {attack.name:<6} targeted success "
                f"{row['targeted_success']:6.1%}  misclassified {row['misclassified']:6.1%}  "
                f"mean L2 {row['mean_l2']:.3f}  {row['seconds']:.1f} s",
                flush=True,
            )
    result = {
        "command": "python " + " ".join(sys.argv),
        "dataset": args.dataset,
        "model": "thesis-shallow",
        "training": TRAINING[args.dataset],
        "images": len(x),
        "clean_accuracy": float((clean == y).float().mean()),
        "steps": args.steps,
        "targets": "one per image, uniform over the other classes (seeded)",
        "note": "UPSET: one perturbation per target class shared by all images; PGD: one per "
        "image. PGD alpha = 2.5·eps/steps with a random start; UPSET lr 0.01, fidelity 0.01.",
        "results": rows,
        "provenance": provenance(),
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
