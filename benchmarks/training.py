"""Training throughput of the thesis models, fp32 vs bf16 autocast, measured side by side.

Run: ``python benchmarks/training.py`` (or ``make bench``). Prints images/s per model and
precision and the bf16/fp32 ratio, and writes ``benchmarks/results/training.json``. Speeds
differ between machines; only ratios from one run are comparable.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from robustlab.io import atomic_write_json
from robustlab.models import build_model
from robustlab.provenance import provenance


def images_per_second(model_name: str, precision: str, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(
        model_name, input_shape=(1, 28, 28), num_classes=10, mean=[0.1307], std=[0.3081]
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    model.train()

    def step() -> None:
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if precision == "bf16"
            else contextlib.nullcontext()
        )
        with autocast:
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up: kernel selection, allocator
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training.json"))
    args = parser.parse_args()
    rows = []
    for model_name in ("thesis-shallow", "thesis-deep"):
        speeds = {
            p: images_per_second(model_name, p, args.batch, args.steps) for p in ("fp32", "bf16")
        }
        ratio = speeds["bf16"] / speeds["fp32"]
        rows.append(
            {
                "model": model_name,
                **{f"{p}_images_per_s": s for p, s in speeds.items()},
                "bf16_over_fp32": ratio,
            }
        )
        print(
            f"{model_name:16s} fp32 {speeds['fp32']:8.0f} img/s   bf16 {speeds['bf16']:8.0f} img/s"
            f"   bf16/fp32 {ratio:.2f}x"
        )
    atomic_write_json(
        args.out,
        {"batch": args.batch, "steps": args.steps, "results": rows, "provenance": provenance()},
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
