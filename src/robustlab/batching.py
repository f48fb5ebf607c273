"""Forward passes in cache-sized chunks on the CPU.

On these CPUs a small CNN runs a batch of 1000 at half the per-image speed of a batch of 128
(measured: thesis-shallow input-gradient steps 1168 vs 2381 images/s in fp32, 2518 vs 4335 in
bf16; the activations of 128 images fit the caches, those of 1000 do not). Running the forward
pass chunk by chunk keeps every operation, backward included (autograd mirrors the forward's
shapes), at the fast size. Examples are independent in eval mode, so the result is the same
up to floating-point rounding. On CUDA large batches are what the device wants, so nothing is
split there.

Forward-only loops (the Square attack's thousands of queries) also gain from channels-last
weights in a convolutional model: oneDNN's CPU convolutions are faster in that layout
(measured: thesis-shallow, 768 images, bf16 autocast, 111 → 75 ms per pass, and Square 1.5×
faster). The gain does not carry over to input gradients, so gradient attacks keep the
weights as they are.
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


class ChannelsLastForward(nn.Module):
    """Runs ``model``'s own forward with channels-last copies of its 4-D weights.

    The model itself is called (hooks, wrappers and any state they keep see every query) and
    never changed: the copies are passed in with ``torch.func.functional_call``, so parameters
    keep their layout, ``requires_grad`` flags and pending gradients. Made for loops of forward
    passes without gradients; the copies are taken once, so the model must not be trained
    while this view is in use.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.weights = {
            name: parameter.detach().contiguous(memory_format=torch.channels_last)
            for name, parameter in model.named_parameters()
            if parameter.dim() == 4
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = torch.func.functional_call(
            self.model, self.weights, (x,), strict=False
        )
        return output


def forward_only_view(model: nn.Module) -> nn.Module:
    """``ChannelsLastForward(model)`` where it helps: a CPU model with 2-D convolutions."""
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.device.type != "cpu":
        return model
    if not any(isinstance(module, nn.Conv2d) for module in model.modules()):
        return model
    return ChannelsLastForward(model)
