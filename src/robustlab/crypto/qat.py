"""Quantisation-aware fine-tuning: train the float model through a simulation of its integer
network, so the weights learn to live with 3-bit weights, few-level activations and rounded
accumulators.

The simulation uses the scales of a post-training quantisation (``calibrate``) and rounds with
straight-through gradients: pixels to ``input_levels`` steps, weights to their integer grid,
each pre-activation to its table's step (2**lsbs accumulator units), each activation to its
levels. The scales are fixed before training and kept for the final quantisation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.crypto.layers import Lookup
from robustlab.crypto.network import IntegerNetwork
from robustlab.crypto.program import Affine
from robustlab.crypto.quantize import Calibrated, QuantSpec, calibrate
from robustlab.models import Classifier


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    distill: float = 0.0
    """Weight of the float model's soft labels in the loss (knowledge distillation; 0: off)."""
    temperature: float = 2.0
    rounding_noise: float = 0.0
    """Standard deviation, in rounding steps, of Gaussian noise added to each accumulator
    before it is rounded in training, so the network learns to tolerate the neighbouring table
    entry: approximate rounding's error. Concrete 2.11's matched about 0.13 (measured)."""

    def __post_init__(self) -> None:
        if self.rounding_noise < 0:
            raise ValueError(f"rounding_noise must be >= 0, got {self.rounding_noise}")


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def _modules(model: nn.Module) -> list[nn.Module]:
    """The body's modules in the order ``read_program`` reads them (inference no-ops out)."""
    body = model.body if isinstance(model, Classifier) else model
    return [
        m for m in body.modules() if not isinstance(m, (nn.Sequential, nn.Dropout, nn.Identity))
    ]


def _simulation(
    model: nn.Module, calibrated: Calibrated, spec: QuantSpec
) -> Callable[..., torch.Tensor]:
    """A differentiable forward pass that rounds wherever the integer network rounds."""
    modules = _modules(model)
    program, units = calibrated.program, calibrated.units
    layers = calibrated.network.layers
    assert len(modules) == len(program), "program and modules must correspond"
    levels = spec.input_levels
    qmax_w = 2 ** (spec.weight_bits - 1) - 1
    qmax_a = 2**spec.activation_bits - 1
    normalize = model.normalize if isinstance(model, Classifier) else nn.Identity()
    first = next(i for i, op in enumerate(program) if isinstance(op, Affine))
    std = getattr(normalize, "std", torch.ones(1, 1, 1)).reshape(-1)

    def weight_steps(index: int, module: nn.Linear | nn.Conv2d) -> torch.Tensor:
        """Real-weight step per output channel (and per input feature for the first layer)."""
        previous = units[index - 1] if index > 0 else None
        step_out = torch.as_tensor(units[index], dtype=torch.float32)
        in_unit = 1.0 if previous is None or index == first else float(previous.reshape(-1)[0])
        weight = module.weight
        if isinstance(module, nn.Linear):
            step = step_out.reshape(-1, 1).expand(weight.shape[0], 1) / in_unit
            if index == first:
                per_feature = std.repeat_interleave(weight.shape[1] // std.numel())
                step = step * (per_feature * levels).reshape(1, -1)
            return step
        step = step_out.reshape(-1, 1, 1, 1).expand(weight.shape[0], 1, 1, 1) / in_unit
        if index == first:
            step = step * (std * levels).reshape(1, -1, 1, 1)
        return step

    steps = {
        i: weight_steps(i, m).detach()
        for i, m in enumerate(modules)
        if isinstance(m, (nn.Linear, nn.Conv2d))
    }

    rounded_channels = {  # where approximate rounding can err: channels that are rounded
        i: torch.as_tensor(layer.lsbs > 0, dtype=torch.float32)
        for i, layer in enumerate(layers)
        if isinstance(layer, Lookup)
    }

    def forward(
        x: torch.Tensor, rounding_noise: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        h = normalize(_ste_round(x.clamp(0, 1) * levels) / levels)
        for index, module in enumerate(modules):
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                step = steps[index]
                weight = torch.clamp(_ste_round(module.weight / step), -qmax_w, qmax_w) * step
                if isinstance(module, nn.Linear):
                    h = F.linear(h, weight, module.bias)
                else:
                    h = F.conv2d(h, weight, module.bias, stride=module.stride)
            elif isinstance(module, nn.ReLU):
                lookup = layers[index]
                assert isinstance(lookup, Lookup)
                shape = (1, -1) + (1,) * (h.ndim - 2)
                unit = np.broadcast_to(units[index - 1], lookup.lsbs.shape)
                pre_step = torch.as_tensor(unit * 2.0**lookup.lsbs, dtype=torch.float32)
                steps_in = h / pre_step.reshape(shape)
                if rounding_noise > 0:
                    noise = torch.randn(steps_in.shape, generator=generator)
                    mask = rounded_channels[index].reshape(shape)
                    steps_in = steps_in + rounding_noise * mask * noise
                h = _ste_round(steps_in) * pre_step.reshape(shape)
                scale = float(units[index].reshape(-1)[0])
                h = torch.clamp(_ste_round(F.relu(h) / scale), 0, qmax_a) * scale
            else:
                h = module(h)
        logits: torch.Tensor = h
        return logits

    return forward


def _distillation(
    logits: torch.Tensor, teacher: nn.Module, images: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL divergence from the float teacher's softened predictions, scaled by T²."""
    with torch.no_grad():
        target = F.softmax(teacher(images) / temperature, dim=1)
    student = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(student, target, reduction="batchmean") * temperature**2


@dataclass(frozen=True, eq=False)
class Finetuned:
    model: nn.Module
    """The fine-tuned float model (its own float accuracy is usually a little lower)."""
    network: IntegerNetwork
    """Its integer network, quantised with the scales it was trained under."""


def finetune(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: QuantSpec,
    config: FinetuneConfig | None = None,
    *,
    calibration: torch.Tensor | None = None,
) -> Finetuned:
    """``model`` fine-tuned through its integer network's simulation on (``images``,
    ``labels``), training data, and quantised with the same scales; ``calibration`` (default:
    the first 5,000 images) sets the scales once, before training, and the ranges after it.

    The scales stay fixed: recalibrating them after training moves every rounding grid the
    weights have just adapted to, which loses most of the gain."""
    config = config or FinetuneConfig()
    tuned = copy.deepcopy(model).cpu().eval()
    cal = calibration if calibration is not None else images[:5000]
    calibrated = calibrate(tuned, cal, spec)
    forward = _simulation(tuned, calibrated, spec)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=config.lr)
    steps = config.epochs * ((len(images) + config.batch_size - 1) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    teacher = copy.deepcopy(tuned).eval()
    tuned.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), config.batch_size):
            batch = order[start : start + config.batch_size]
            logits = forward(images[batch], config.rounding_noise, generator)
            loss = F.cross_entropy(logits, labels[batch])
            if config.distill > 0:
                loss = (1 - config.distill) * loss + config.distill * _distillation(
                    logits, teacher, images[batch], config.temperature
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
    tuned.eval()
    network = calibrate(tuned, cal, spec, scales=calibrated.scales).network
    return Finetuned(tuned, network)
