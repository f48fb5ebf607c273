"""Our AutoAttack against the authors' (pyautoattack) on the same models and images.

Two modes, one script:

* **Grid** (``--grid``): every model of ``SUBJECTS`` (two architectures, each with its own ε)
  × every image count of ``--grid-images`` (default 200 and 1000). The models are trained
  here (one clean epoch, then a short PGD adversarial training, so that most images survive
  the attacks: a model at 0% robust accuracy makes any cascade trivially fast) and cached in
  the temp folder. Writes ``benchmarks/results/evaluator-grid.json``. ``--quick`` is a smoke
  run of the same code: weakly trained models, 16 and 32 images, a file in the temp folder.
  Run: ``ROBUSTLAB_DATA=/path/to/data python benchmarks/evaluator.py --grid --threads 1``.
* **One cell** (default): ``--images``, ``--eps``, ``--run-dir`` for any trained robustlab run
  (MNIST), ``--model`` for a thesis-shallow MNIST state dict; without either, a thesis-shallow
  is trained for one clean epoch and cached in the temp folder. Writes ``--out``
  (``benchmarks/results/evaluator.json``).

``--their-batch`` is the batch size given to pyautoattack, default 128, the fastest size on
these CPUs, as ours uses. Runs are interleaved per repeat (their order alternating between
repeats) so that load on a shared machine hits all alike; medians are reported, of wall
seconds and of CPU seconds (the process's CPU time, which other workers' load on the machine
inflates far less than wall time). Robust accuracy is always measured with the fp32 model on
the returned inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import PGD
from robustlab.attacks.autoattack import AutoAttack
from robustlab.data import load_split
from robustlab.io import atomic_write_json
from robustlab.models import build_model, count_parameters
from robustlab.provenance import provenance
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory

Run = Callable[[], tuple[torch.Tensor, dict[str, float], dict[str, float]]]
"""One evaluation: adversarial inputs, robust accuracy after each attack, seconds per attack."""


EVALUATORS = ("ours", "pyautoattack", "pyautoattack-no-fab", "ours-bf16", "ours-fast")
GRID_EVALUATORS = ("ours", "pyautoattack")
CACHE = Path(tempfile.gettempdir()) / "robustlab-benchmarks"


# --- Models -----------------------------------------------------------------------------------


def mnist_model(architecture: str, **options: Any) -> nn.Module:
    return build_model(
        architecture,
        input_shape=(1, 28, 28),
        num_classes=10,
        mean=[0.1307],
        std=[0.3081],
        **options,
    )


def thesis_shallow() -> nn.Module:
    return mnist_model("thesis-shallow")


@dataclass(frozen=True)
class Recipe:
    """How a grid model is trained: one clean epoch (Adam, lr 1e-3, batch 128), then
    ``steps`` steps of PGD-5 adversarial training (α = ε/2, batch 100, ε ramped up over the
    first 30% of the steps), all on the first ``images`` MNIST training images."""

    steps: int
    images: int = 60_000

    def describe(self, eps: float) -> str:
        return (
            f"1 clean epoch on {self.images} MNIST training images, then {self.steps} steps "
            f"of PGD-5 adversarial training at eps={eps} (batch 100)"
        )


FULL_RECIPE = Recipe(steps=600)
QUICK_RECIPE = Recipe(steps=20, images=6_400)


@dataclass(frozen=True)
class Subject:
    """A grid model: an architecture with its options, and the L∞ ε it is trained and
    attacked at (ε chosen so that most test images survive AutoAttack)."""

    label: str
    architecture: str
    options: tuple[tuple[str, Any], ...]
    eps: float

    def build(self) -> nn.Module:
        return mnist_model(self.architecture, **dict(self.options))


SUBJECTS = (
    Subject("mlp-2x128", "mlp", (("depth", 2), ("width", 128)), eps=0.1),
    Subject("convnet-1x0.25", "convnet", (("depth", 1), ("width", 0.25)), eps=0.2),
)
"""Two architectures other than the thesis-shallow the evaluator was first tuned on: an MLP
(no convolution: matrix products on a few hundred rows, where per-step overheads weigh most)
and a one-convolution net of 8 channels (convolutions of few channels, compute-bound)."""


def trained_subject(subject: Subject, recipe: Recipe) -> tuple[nn.Module, Path]:
    """The subject trained by ``recipe``, cached in the temp folder; and its file."""
    tag = f"{subject.label}-eps{subject.eps}-clean{recipe.images}-at{recipe.steps}-v1.pt"
    cached = CACHE / tag
    model = subject.build()
    if cached.exists():
        model.load_state_dict(torch.load(cached, weights_only=True))
        return model.eval(), cached
    print(f"training {subject.label}: {recipe.describe(subject.eps)}", flush=True)
    train = load_split("mnist", "train")
    images, labels = train.images[: recipe.images], train.labels[: recipe.images]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.random.fork_rng():  # dropout draws from the global generator
        torch.manual_seed(0)
        _clean_epoch(model, optimizer, images, labels)
        _adversarial_steps(model, optimizer, images, labels, subject.eps, recipe.steps)
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cached)
    return model.eval(), cached


def _clean_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor
) -> None:
    model.train()
    order = torch.randperm(len(labels))
    for start in range(0, len(order), 128):
        index = order[start : start + 128]
        loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _adversarial_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    steps: int,
) -> None:
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        index = torch.randint(0, len(labels), (100,), generator=generator)
        radius = eps * min(1.0, (step + 1) / (0.3 * steps))
        x_adv = PGD(eps=radius, alpha=radius / 2, steps=5, seed=step)(
            model, images[index], labels[index]
        )
        model.train()
        loss = F.cross_entropy(model(x_adv), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()


def trained_model(path: Path | None) -> nn.Module:
    """The thesis-shallow state dict at ``path``, or thesis-shallow after one clean epoch
    (cached)."""
    model = thesis_shallow()
    cached = path or CACHE / "shallow-1epoch.pt"
    if cached.exists():
        model.load_state_dict(torch.load(cached, weights_only=True))
        return model.eval()
    if path is not None:
        raise SystemExit(f"no model at {path}")
    train = load_split("mnist", "train")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(0)
    _clean_epoch(model, optimizer, train.images, train.labels)
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cached)
    return model.eval()


# --- Evaluators -------------------------------------------------------------------------------


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


def evaluators(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    chosen: Sequence[str],
    their_batch: int,
) -> dict[str, Run]:
    """The chosen evaluators on one model and batch, in the order of ``EVALUATORS``."""
    makers: dict[str, Callable[[], Run]] = {
        "ours": lambda: ours(model, x, y, AutoAttack(eps=eps)),
        "pyautoattack": lambda: theirs(model, x, y, eps, None, their_batch),
        "pyautoattack-no-fab": lambda: theirs(
            model, x, y, eps, ["apgd-ce", "apgd-t", "square"], their_batch
        ),
        "ours-bf16": lambda: ours(model, x, y, AutoAttack(eps=eps, precision="bf16")),
        "ours-fast": lambda: ours(model, x, y, AutoAttack(eps=eps, version="fast")),
    }
    return {name: makers[name]() for name in EVALUATORS if name in chosen}


def chosen_evaluators(text: str) -> list[str]:
    chosen = {"pyautoattack", *text.split(",")}
    if unknown := chosen - set(EVALUATORS):
        raise SystemExit(f"--evaluators: unknown {sorted(unknown)}; expected some of {EVALUATORS}")
    return [name for name in EVALUATORS if name in chosen]


# --- Measuring --------------------------------------------------------------------------------


@dataclass
class Measured:
    """Everything one evaluator produced over the repeats of one cell."""

    seconds: list[float]
    cpu_seconds: list[float]
    accuracy: float = 0.0
    stages: dict[str, float] | None = None
    per_attack: dict[str, float] | None = None


def robust_accuracy(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(dim=1) == y).float().mean())


def measure(
    runs: dict[str, Run], model: nn.Module, y: torch.Tensor, repeats: int, label: str = ""
) -> dict[str, Measured]:
    """Each run ``repeats`` times, interleaved; odd repeats go in reverse order, so that a
    drift in the machine's load does not always favour the same evaluator."""
    measured = {name: Measured(seconds=[], cpu_seconds=[]) for name in runs}
    for repeat in range(repeats):
        order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
        for name in order:
            started, cpu_started = time.perf_counter(), time.process_time()
            x_adv, stages, per_attack = runs[name]()
            record = measured[name]
            record.seconds.append(time.perf_counter() - started)
            record.cpu_seconds.append(time.process_time() - cpu_started)
            record.accuracy = robust_accuracy(model, x_adv, y)
            record.stages, record.per_attack = stages, per_attack
            print(
                f"{label}repeat {repeat}: {name:19s} {record.seconds[-1]:7.1f} s wall "
                f"{record.cpu_seconds[-1]:7.1f} s cpu  robust {record.accuracy:6.2%}",
                flush=True,
            )
    return measured


def points_above_reference(
    stages: dict[str, float], final: float, reference: dict[str, float], reference_final: float
) -> dict[str, float]:
    """Our robust accuracy minus the authors', in percentage points, after each attack both
    ran and for the worst case (> 0: ours is weaker). The authors' log stops once nothing is
    left to attack, so a stage it skipped holds the accuracy of the stage before."""
    gaps: dict[str, float] = {}
    last = reference.get("clean", 1.0)
    for stage in ("apgd-ce", "apgd-t"):
        last = reference.get(stage, last)
        if stage in stages:
            gaps[stage] = round(100 * (stages[stage] - last), 2)
    gaps["worst case"] = round(100 * (final - reference_final), 2)
    return gaps


def result_rows(measured: dict[str, Measured], images: int) -> list[dict[str, Any]]:
    """One row per evaluator: medians, speed-ups over pyautoattack, strength gaps."""
    reference = measured["pyautoattack"]
    their_wall = statistics.median(reference.seconds)
    their_cpu = statistics.median(reference.cpu_seconds)
    rows = []
    for name, record in measured.items():
        wall, cpu = statistics.median(record.seconds), statistics.median(record.cpu_seconds)
        rows.append(
            {
                "evaluator": name,
                "median_seconds": wall,
                "seconds": record.seconds,
                "median_cpu_seconds": cpu,
                "cpu_seconds": record.cpu_seconds,
                "images_per_s": images / wall,
                "robust_accuracy": record.accuracy,
                "robust_after_each_attack": record.stages,
                "seconds_per_attack_last_repeat": record.per_attack,
                "speedup_over_pyautoattack": their_wall / wall,
                "cpu_speedup_over_pyautoattack": their_cpu / cpu,
                "points_above_pyautoattack": points_above_reference(
                    record.stages or {}, record.accuracy, reference.stages or {}, reference.accuracy
                ),
            }
        )
        print(
            f"{name:19s} {wall:8.1f} s  robust {record.accuracy:6.2%}  "
            f"{their_wall / wall:5.2f}x pyautoattack (cpu {their_cpu / cpu:5.2f}x)  "
            f"points above pyautoattack {rows[-1]['points_above_pyautoattack']}",
            flush=True,
        )
    return rows


def machine() -> dict[str, Any]:
    """Provenance plus what decides CPU speed here: the CPU model and the load average
    (other workers share these cores)."""
    info: dict[str, Any] = dict(provenance())
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        flags = next((line for line in cpuinfo if line.startswith("flags")), "")
        info["cpu_model"] = names[0] if names else None
        info["avx512_bf16"] = "avx512_bf16" in flags
    except OSError:
        info["cpu_model"] = None
    info["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return info


# --- The two modes ----------------------------------------------------------------------------


def single_cell(args: argparse.Namespace) -> None:
    if args.run_dir is not None:
        trained = load_trained_model(RunDirectory(args.run_dir), torch.device("cpu"), args.phase)
        model = trained.model
        described = f"{trained.weights} ({trained.config.model.name})"
    else:
        model = trained_model(args.model)
        described = str(args.model or "thesis-shallow, 1 clean epoch")
    test = load_split("mnist", "test")
    x, y = test.images[: args.images], test.labels[: args.images]
    chosen = chosen_evaluators(args.evaluators)
    runs = evaluators(model, x, y, args.eps, chosen, args.their_batch)
    measured = measure(runs, model, y, args.repeats or 3)
    atomic_write_json(
        args.out,
        {
            "images": len(y),
            "eps": args.eps,
            "repeats": args.repeats or 3,
            "model": described,
            "their_batch_size": args.their_batch,
            "results": result_rows(measured, len(y)),
            "provenance": machine(),
        },
    )
    print(f"wrote {args.out}")


def grid(args: argparse.Namespace) -> None:
    """Every subject × every image count, each cell interleaved over the repeats."""
    recipe = QUICK_RECIPE if args.quick else FULL_RECIPE
    counts = [int(count) for count in args.grid_images.split(",")]
    labels = args.subjects.split(",")
    subjects = [subject for subject in SUBJECTS if subject.label in labels]
    if len(subjects) != len(labels):
        raise SystemExit(f"--subjects: expected some of {[s.label for s in SUBJECTS]}")
    chosen = chosen_evaluators(args.evaluators)
    repeats = args.repeats or 1
    test = load_split("mnist", "test")
    started, at_start = time.perf_counter(), machine()
    cells = []
    for subject in subjects:
        model, weights = trained_subject(subject, recipe)
        for count in counts:
            x, y = test.images[:count], test.labels[:count]
            label = f"{subject.label} {count} images eps {subject.eps}: "
            runs = evaluators(model, x, y, subject.eps, chosen, args.their_batch)
            measured = measure(runs, model, y, repeats, label)
            cells.append(
                {
                    "model": subject.label,
                    "architecture": subject.architecture,
                    "options": dict(subject.options),
                    "parameters": count_parameters(model),
                    "training": recipe.describe(subject.eps),
                    "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                    "images": count,
                    "eps": subject.eps,
                    "clean_accuracy": robust_accuracy(model, x, y),
                    "results": result_rows(measured, count),
                }
            )
    out = args.out or (CACHE / "evaluator-grid-quick.json" if args.quick else Path(GRID_OUT))
    atomic_write_json(
        out,
        {
            "quick": args.quick,
            "repeats": repeats,
            "their_batch_size": args.their_batch,
            "evaluators": chosen,
            "total_wall_seconds": time.perf_counter() - started,
            "cells": cells,
            "provenance": at_start,
            "load_average_at_end": machine()["load_average"],
        },
    )
    print(f"wrote {out}")


GRID_OUT = "benchmarks/results/evaluator-grid.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", action="store_true", help="run the models × image counts grid")
    parser.add_argument("--quick", action="store_true", help="with --grid: a smoke run")
    parser.add_argument("--grid-images", default=None, help="with --grid: image counts")
    parser.add_argument(
        "--subjects",
        default=",".join(subject.label for subject in SUBJECTS),
        help="with --grid: comma-separated models",
    )
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument(
        "--repeats", type=int, default=None, help="interleaved repeats (3; grid: 1)"
    )
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
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"result file (benchmarks/results/evaluator.json; grid: {GRID_OUT})",
    )
    parser.add_argument(
        "--evaluators",
        default=None,
        help=f"comma-separated subset of {','.join(EVALUATORS)} (pyautoattack is always run; "
        f"grid default: {','.join(GRID_EVALUATORS)})",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.grid:
        args.evaluators = args.evaluators or ",".join(GRID_EVALUATORS)
        args.grid_images = args.grid_images or ("16,32" if args.quick else "200,1000")
        grid(args)
    else:
        args.evaluators = args.evaluators or ",".join(EVALUATORS)
        args.out = args.out or Path("benchmarks/results/evaluator.json")
        single_cell(args)


if __name__ == "__main__":
    main()
