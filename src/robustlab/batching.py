"""Forward passes in cache-sized chunks on the CPU.

On these CPUs a small CNN runs a batch of 1000 at half the per-image speed of a batch of 128
(measured: thesis-shallow input-gradient steps 1168 vs 2381 images/s in fp32, 2518 vs 4335 in
bf16; the activations of 128 images fit the caches, those of 1000 do not). Running the forward
pass chunk by chunk keeps every operation, backward included (autograd mirrors the forward's
shapes), at the fast size. Examples are independent in eval mode, so the result is the same
up to floating-point rounding. On CUDA large batches are what the device wants, so nothing is
split there.

Forward-only loops (the Square attack's thousands of queries) run on a faster stand-in for
the model where one is safe (``forward_only_view``):

* A model built only of plain layers (``FROZEN_LAYERS``, or robustlab's classes that declare
  ``frozen_forward_safe``) with no hooks runs as a frozen TorchScript inference graph of a
  copy (``FrozenForward``): convolution, ReLU and pooling fused in oneDNN's blocked layout.
  Where Square's time went on small CNNs was PyTorch's channels-first max-pool kernel and
  unfused element-wise passes, not the convolutions (``benchmarks/forward_views.py``, one
  thread, 105 images: a one-conv 8-channel net 4.7× faster per pass, thesis-shallow 1.5×, an
  MLP about the same). Its outputs match the model's to float rounding (about 1e-7),
  so an attack using it confirms every success with the model itself (``AttackContext``'s
  ``reference``).
* Any other convolutional model runs with channels-last copies of its weights, through the
  model's own forward, so hooks and wrappers see every query (thesis-shallow, 768 images,
  bf16 autocast: 111 → 75 ms per pass).

Neither helps input gradients, so gradient attacks call the model as it is.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
from torch import nn

CPU_CHUNK = 128


def chunk_size(device: torch.device) -> int | None:
    return CPU_CHUNK if device.type == "cpu" else None


def chunked_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, computed in chunks of at most ``CPU_CHUNK`` examples on the CPU.

    The chunks are of equal size (170 examples: 85 + 85, not 128 + 42): a small remainder
    chunk runs at a worse per-image speed, which mattered for attacks whose batches shrink
    to a few hundred survivors (measured, CPU time per image at 170 examples: a one-conv
    net 60.6 vs 70.2 µs, thesis-shallow 1034 vs 1157 µs; MLPs unchanged).
    """
    size = chunk_size(x.device)
    if size is None or len(x) <= size:
        output: torch.Tensor = model(x)
        return output
    chunks = math.ceil(len(x) / size)
    return torch.cat([model(part) for part in torch.split(x, math.ceil(len(x) / chunks))])


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


FROZEN_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Sequential,
    nn.Conv2d,
    nn.Linear,
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.BatchNorm2d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
)
"""Layers whose eval-mode forward is a fixed function of input, parameters and buffers (exact
types: a subclass may override ``forward``)."""


class FrozenForward(nn.Module):
    """A frozen TorchScript inference graph of a copy of ``model`` (taken in eval mode).

    The model itself is neither called nor changed; the copy is taken once, so the model must
    not be trained while this view is in use. TorchScript is deprecated in recent PyTorch but
    builds in about a second; ``torch.compile``, its successor, builds C++ per input shape at
    start-up (not measured against it here). ``forward_only_view`` falls back to the eager
    model if TorchScript is gone.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        twin = copy.deepcopy(model).eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(twin, example, check_trace=False)  # type: ignore[no-untyped-call]
            self.graph = torch.jit.optimize_for_inference(torch.jit.freeze(traced))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.graph(x)
        return output


def forward_only_view(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The fastest safe stand-in for ``model`` in forward passes without gradients, on inputs
    shaped like ``example``: ``FrozenForward`` for a CPU model of plain layers without hooks,
    ``ChannelsLastForward`` for another CPU model with 2-D convolutions, else the model."""
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.device.type != "cpu":
        return model
    if _plain_layers(model) and not _hooked(model):
        try:
            return FrozenForward(model, example[:1])
        except (AttributeError, RuntimeError):  # no TorchScript here, or a graph it cannot trace
            pass
    if not any(isinstance(module, nn.Conv2d) for module in model.modules()):
        return model
    return ChannelsLastForward(model)


def _plain_layers(model: nn.Module) -> bool:
    return all(
        not module.training
        and (type(module) in FROZEN_LAYERS or getattr(type(module), "frozen_forward_safe", False))
        for module in model.modules()
    )


def _hooked(model: nn.Module) -> bool:
    """Whether any forward hook could see a call (a frozen graph would skip it)."""
    from torch.nn.modules import module as module_state

    if module_state._global_forward_hooks or module_state._global_forward_pre_hooks:
        return True
    return any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())
