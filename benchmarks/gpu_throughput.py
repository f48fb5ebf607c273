"""Adversarial-training throughput of the thesis CNNs on one device, under the options that
can help small networks on a GPU, side by side in one run.

Small CNNs at batch 128 are launch-bound on a GPU: each PGD step is a handful of tiny
kernels, so the GPU idles between launches. This measures one PGD-k adversarial-training step
(k attack steps, then a weight update) under: the baseline (fp32, batch 128); larger batches;
channels-last memory; bf16 autocast; ``torch.compile``; and ``torch.compile`` in
``reduce-overhead`` mode (CUDA graphs). Each variant reports images/s and its speed-up over
the baseline, measured in the same process.

Run: ``python benchmarks/gpu_throughput.py`` (any device; ``--device cpu --quick`` is the
smoke test CI can afford). Writes ``benchmarks/results/gpu-throughput.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.io import atomic_write_json
from robustlab.models import build_model
from robustlab.provenance import provenance


@dataclass(frozen=True)
class Variant:
    name: str
    batch: int = 128
    channels_last: bool = False
    bf16: bool = False
    compile_mode: str | None = None


VARIANTS = (
    Variant("baseline fp32, batch 128"),
    Variant("batch 512", batch=512),
    Variant("batch 2048", batch=2048),
    Variant("channels-last", channels_last=True),
    Variant("bf16 autocast", bf16=True),
    Variant("bf16, batch 512", batch=512, bf16=True),
    Variant("torch.compile", compile_mode="default"),
    Variant("torch.compile reduce-overhead (CUDA graphs)", compile_mode="reduce-overhead"),
)


def _model(name: str, device: torch.device, variant: Variant) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(
        name, input_shape=(1, 28, 28), num_classes=10, mean=[0.1307], std=[0.3081]
    ).to(device)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@contextlib.contextmanager
def _precision(device: torch.device, bf16: bool) -> Iterator[None]:
    if bf16:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def adversarial_step(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    variant: Variant,
    device: torch.device,
    eps: float,
    attack_steps: int,
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One PGD-k adversarial-training step (Madry et al.): k signed-gradient ascent steps from
    a random start inside the L∞ ball, then one weight update on the result."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    alpha = 2.5 * eps / attack_steps

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        delta = (torch.rand_like(x) * 2 - 1) * eps
        model.eval()
        for _ in range(attack_steps):
            delta.requires_grad_(True)
            with _precision(device, variant.bf16):
                loss = F.cross_entropy(forward((x + delta).clamp(0, 1)).float(), y)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        model.train()
        with _precision(device, variant.bf16):
            loss = F.cross_entropy(forward((x + delta).clamp(0, 1)).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(
    name: str, variant: Variant, device: torch.device, attack_steps: int, seconds: float
) -> dict[str, Any]:
    model = _model(name, device, variant)
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if variant.compile_mode is not None:
        forward = torch.compile(model, mode=variant.compile_mode)  # type: ignore[assignment]
    step = adversarial_step(model, forward, variant, device, 0.3, attack_steps)
    x = torch.rand(variant.batch, 1, 28, 28, device=device)
    if variant.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (variant.batch,), device=device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):  # warm-up: compilation, kernel selection, allocator
        step(x, y)
    synchronize()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step(x, y)
        done += 1
        if done % 5 == 0:
            synchronize()
    synchronize()
    elapsed = time.perf_counter() - started
    return {
        "model": name,
        "variant": variant.name,
        "batch": variant.batch,
        "images_per_second": round(variant.batch * done / elapsed, 1),
        "steps": done,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--attack-steps", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed per variant")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 variants, 1 s")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu-throughput.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = VARIANTS[:2] if args.quick else VARIANTS
    seconds = 1.0 if args.quick else args.seconds
    rows = []
    for name in ("thesis-shallow", "thesis-deep"):
        baseline = None
        for variant in variants:
            try:
                row = measure(name, variant, device, args.attack_steps, seconds)
            except Exception as error:  # a variant this torch or device cannot run
                row = {"model": name, "variant": variant.name, "error": str(error)[:200]}
            if "images_per_second" in row:
                baseline = baseline or row["images_per_second"]
                row["speedup"] = round(row["images_per_second"] / baseline, 2)
            rows.append(row)
            print(row, flush=True)
            record = {  # rewritten after every variant: a timeout keeps what was measured
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "attack_steps": args.attack_steps,
                "rows": rows,
                "provenance": provenance(),
            }
            atomic_write_json(args.out, record)


if __name__ == "__main__":
    main()
