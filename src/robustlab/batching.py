"""Forward passes in cache-sized chunks on the CPU.

On these CPUs a small CNN runs a batch of 1000 at half the per-image speed of a batch of 128
(measured: thesis-shallow input-gradient steps 1168 vs 2381 images/s in fp32, 2518 vs 4335 in
bf16; the activations of 128 images fit the caches, those of 1000 do not). Running the forward
pass chunk by chunk keeps every operation, backward included (autograd mirrors the forward's
shapes), at the fast size. Examples are independent in eval mode, so the result is the same
up to floating-point rounding. On CUDA large batches are what the device wants, so nothing is
split there.
"""

from __future__ import annotations

import torch
from torch import nn

CPU_CHUNK = 128


def chunk_size(device: torch.device) -> int | None:
    return CPU_CHUNK if device.type == "cpu" else None


def chunked_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, computed ``CPU_CHUNK`` examples at a time on the CPU."""
    size = chunk_size(x.device)
    if size is None or len(x) <= size:
        output: torch.Tensor = model(x)
        return output
    return torch.cat([model(part) for part in torch.split(x, size)])
