"""Our AutoAttack against the authors' (pyautoattack) on the same model and images.

Run: ``ROBUSTLAB_DATA=/path/to/data python benchmarks/evaluator.py`` (options: ``--images``,
``--eps``, ``--repeats``, ``--threads``, ``--run-dir`` for any trained robustlab run (MNIST),
``--model`` for a thesis-shallow MNIST state dict; without either, a thesis-shallow is trained
for one clean epoch and cached in the temp folder; ``--their-batch`` is the batch size given to
pyautoattack, default 128, the fastest size on these CPUs, as ours uses).
Runs are interleaved (ours fp32, theirs standard, theirs without FAB-T, ours bf16, ours fast,
per repeat) so load on a shared machine hits all alike; medians are reported. Robust
accuracy is always measured with the fp32 model on the returned inputs. Writes
``benchmarks/results/evaluator.json``.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.autoattack import AutoAttack
from robustlab.data import load_split
from robustlab.io import atomic_write_json
from robustlab.models import build_model
from robustlab.provenance import provenance
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory

Run = Callable[[], tuple[torch.Tensor, dict[str, float], dict[str, float]]]
"""One evaluation: adversarial inputs, robust accuracy after each attack, seconds per attack."""


EVALUATORS = ("ours", "pyautoattack", "pyautoattack-no-fab", "ours-bf16", "ours-fast")


def thesis_shallow() -> nn.Module:
    return build_model(
        "thesis-shallow", input_shape=(1, 28, 28), num_classes=10, mean=[0.1307], std=[0.3081]
    )


def trained_model(path: Path | None) -> nn.Module:
    """The model at ``path``, or thesis-shallow after one clean epoch (cached)."""
    model = thesis_shallow()
    cached = path or Path(tempfile.gettempdir()) / "robustlab-benchmarks" / "shallow-1epoch.pt"
    if cached.exists():
        model.load_state_dict(torch.load(cached, weights_only=True))
        return model.eval()
    if path is not None:
        raise SystemExit(f"no model at {path}")
    train = load_split("mnist", "train")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(0)
    order = torch.randperm(len(train))
    model.train()
    for start in range(0, len(order), 128):
        index = order[start : start + 128]
        loss = F.cross_entropy(model(train.images[index]), train.labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cached)
    return model.eval()


def ours(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AutoAttack) -> Run:
    def run() -> tuple[torch.Tensor, dict[str, float], dict[str, float]]:
        outcome = attack.run(model, x, y)
        x_adv, record = outcome.x_adv, outcome.cascade
        assert record is not None
        stages = {name: count / len(y) for name, count in record.robust.items()}
        return x_adv, stages, record.seconds

    return run


class _Stages(logging.Handler):
    """Collects the authors' "robust accuracy after X: 12.34%" log lines."""

    PATTERN = re.compile(r"(?:robust accuracy after ([A-Z-]+)|initial accuracy): ([\d.]+)%")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stages: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.search(record.getMessage())
        if match:
            name = (match.group(1) or "clean").lower()
            self.stages[name] = float(match.group(2)) / 100


def theirs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    attacks: list[str] | None,
    batch_size: int,
) -> Run:
    """The authors' standard version, or (``attacks``) its members with standard settings,
    run ``batch_size`` images at a time (their ``run_standard_evaluation`` option)."""
    from pyautoattack import AutoAttack as ReferenceAutoAttack

    def run() -> tuple[torch.Tensor, dict[str, float], dict[str, float]]:
        version = "standard" if attacks is None else "custom"
        reference = ReferenceAutoAttack(
            model, attacks=attacks, version=version, eps=eps, norm="Linf", seed=0, device="cpu"
        )
        reference.apgd.n_restarts = 1  # "standard" sets these; "custom" does not
        reference.apgd_targeted.n_target_classes = 9
        reference.square.n_queries = 5000
        stages = _Stages()
        reference.logger.setLevel(logging.DEBUG)
        reference.logger.propagate = False
        reference.logger.addHandler(stages)
        try:
            x_adv, _ = reference.run_standard_evaluation(x, y, batch_size=batch_size)
        finally:
            reference.logger.removeHandler(stages)
        return x_adv, stages.stages, {}

    return run


def robust_accuracy(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(dim=1) == y).float().mean().item()


def points_above_reference(
    stages: dict[str, float], final: float, reference: dict[str, float], reference_final: float
) -> dict[str, float]:
    """Our robust accuracy minus the authors', in percentage points, after each attack both
    ran and for the worst case (> 0: ours is weaker). The authors' log stops once nothing is
    left to attack, so a stage it skipped holds the accuracy of the stage before."""
    gaps = {}
    last = reference.get("clean", 1.0)
    for stage in ("apgd-ce", "apgd-t"):
        last = reference.get(stage, last)
        if stage in stages:
            gaps[stage] = round(100 * (stages[stage] - last), 2)
    gaps["worst case"] = round(100 * (final - reference_final), 2)
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--model", type=Path, default=None, help="thesis-shallow state dict")
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="a robustlab run directory (any model)"
    )
    parser.add_argument("--phase", default=None, help="with --run-dir: weights after this phase")
    parser.add_argument(
        "--their-batch",
        type=int,
        default=128,
        help="pyautoattack's batch_size (its default is 250; 128 is the fastest size here)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/evaluator.json"))
    parser.add_argument(
        "--evaluators",
        default=",".join(EVALUATORS),
        help=f"comma-separated subset of {','.join(EVALUATORS)} (pyautoattack is always run)",
    )
    args = parser.parse_args()
    chosen = {"pyautoattack", *args.evaluators.split(",")}
    if unknown := chosen - set(EVALUATORS):
        raise SystemExit(f"--evaluators: unknown {sorted(unknown)}; expected some of {EVALUATORS}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.run_dir is not None:
        trained = load_trained_model(RunDirectory(args.run_dir), torch.device("cpu"), args.phase)
        model = trained.model
        described = f"{trained.weights} ({trained.config.model.name})"
    else:
        model = trained_model(args.model)
        described = str(args.model or "thesis-shallow, 1 clean epoch")
    test = load_split("mnist", "test")
    x, y = test.images[: args.images], test.labels[: args.images]
    every: dict[str, Run] = {
        "ours": ours(model, x, y, AutoAttack(eps=args.eps)),
        "pyautoattack": theirs(model, x, y, args.eps, None, args.their_batch),
        "pyautoattack-no-fab": theirs(
            model, x, y, args.eps, ["apgd-ce", "apgd-t", "square"], args.their_batch
        ),
        "ours-bf16": ours(model, x, y, AutoAttack(eps=args.eps, precision="bf16")),
        "ours-fast": ours(model, x, y, AutoAttack(eps=args.eps, version="fast")),
    }
    runs = {name: run for name, run in every.items() if name in chosen}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    accuracy: dict[str, float] = {}
    stages: dict[str, dict[str, float]] = {}
    per_attack: dict[str, dict[str, float]] = {}
    for repeat in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            x_adv, stages[name], per_attack[name] = run()
            seconds[name].append(time.perf_counter() - started)
            accuracy[name] = robust_accuracy(model, x_adv, y)
            print(f"repeat {repeat}: {name:19s} {seconds[name][-1]:7.1f} s", flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    rows = []
    for name in runs:
        speedup = median["pyautoattack"] / median[name]
        rows.append(
            {
                "evaluator": name,
                "median_seconds": median[name],
                "seconds": seconds[name],
                "images_per_s": len(y) / median[name],
                "robust_accuracy": accuracy[name],
                "robust_after_each_attack": stages[name],
                "seconds_per_attack_last_repeat": per_attack[name],
                "speedup_over_pyautoattack": speedup,
                "points_above_pyautoattack": points_above_reference(
                    stages[name], accuracy[name], stages["pyautoattack"], accuracy["pyautoattack"]
                ),
            }
        )
        print(
            f"{name:19s} {len(y) / median[name]:8.1f} img/s  robust {accuracy[name]:6.2%}"
            f"  {speedup:5.2f}x pyautoattack  stages {stages[name]}"
            f"  points above pyautoattack {rows[-1]['points_above_pyautoattack']}"
        )
    atomic_write_json(
        args.out,
        {
            "images": len(y),
            "eps": args.eps,
            "repeats": args.repeats,
            "model": described,
            "their_batch_size": args.their_batch,
            "results": rows,
            "provenance": provenance(),
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
