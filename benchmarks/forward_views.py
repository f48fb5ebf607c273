"""Forward-only passes through the model, the channels-last view and the frozen graph.

Square's queries are forward passes without gradients; ``robustlab.batching.forward_only_view``
picks a faster stand-in for them. This measures, per architecture (MNIST-shaped, untrained:
the time of a pass does not depend on the weights) and batch size, the CPU milliseconds of one
pass through the eager model, ``ChannelsLastForward`` and ``FrozenForward``, and how far the
frozen graph's logits are from the model's.

Run: ``python benchmarks/forward_views.py`` (``--threads``, default 1; ``--out``). Writes
``benchmarks/results/forward-views.json``. Passes are interleaved per repeat and medians of
CPU time are reported; compare only ratios from one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.batching import ChannelsLastForward, FrozenForward
from robustlab.io import atomic_write_json
from robustlab.models import build_model, count_parameters
from robustlab.provenance import provenance

ARCHITECTURES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("mlp-2x128", "mlp", {"depth": 2, "width": 128}),
    ("convnet-1x0.25", "convnet", {"depth": 1, "width": 0.25}),
    ("convnet-2x0.5", "convnet", {"depth": 2, "width": 0.5}),
    ("thesis-shallow", "thesis-shallow", {}),
)
BATCHES = (32, 105, 200)


def model(architecture: str, options: dict[str, Any]) -> nn.Module:
    torch.manual_seed(0)
    built = build_model(
        architecture,
        input_shape=(1, 28, 28),
        num_classes=10,
        mean=[0.1307],
        std=[0.3081],
        **options,
    )
    return built.eval()


def cpu_milliseconds(forward: nn.Module, x: torch.Tensor, passes: int) -> float:
    with torch.no_grad():
        started = time.process_time()
        for _ in range(passes):
            forward(x)
        return (time.process_time() - started) / passes * 1e3


def measure(label: str, net: nn.Module, batch: int, repeats: int) -> dict[str, Any]:
    x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
    views: dict[str, nn.Module] = {
        "eager": net,
        "channels_last": ChannelsLastForward(net),
        "frozen": FrozenForward(net, x[:1]),
    }
    passes = max(3, int(2000 / batch)) if count_parameters(net) < 200_000 else 8
    with torch.no_grad():
        for view in views.values():  # warm-up: oneDNN builds its kernels for this shape
            view(x)
        gap = float((views["frozen"](x) - net(x)).abs().max())
    times: dict[str, list[float]] = {name: [] for name in views}
    for _ in range(repeats):
        for name, view in views.items():
            times[name].append(cpu_milliseconds(view, x, passes))
    medians = {name: statistics.median(values) for name, values in times.items()}
    row = {
        "model": label,
        "batch": batch,
        "cpu_ms_per_pass": medians,
        "frozen_speedup": medians["eager"] / medians["frozen"],
        "channels_last_speedup": medians["eager"] / medians["channels_last"],
        "frozen_max_abs_logit_difference": gap,
    }
    print(
        f"{label:15s} batch {batch:4d}  "
        + "  ".join(f"{name} {value:7.2f} ms" for name, value in medians.items())
        + f"  frozen {row['frozen_speedup']:.2f}x  (max |Δ logit| {gap:.1e})",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/forward-views.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for label, architecture, options in ARCHITECTURES:
        net = model(architecture, options)
        for batch in BATCHES:
            rows.append(measure(label, net, batch, args.repeats))
    atomic_write_json(args.out, {"rows": rows, "repeats": args.repeats, "provenance": provenance()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
