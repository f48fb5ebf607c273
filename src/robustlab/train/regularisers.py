"""Gradient-penalty defences: flatten the model around the data instead of training on attacks.

Both objectives add a penalty on a derivative with respect to the input and train it by
double backprop: the derivative is taken with ``create_graph=True`` and only with respect to
the input (``torch.autograd.grad``), so parameter gradients come solely from the trainer's
``loss.backward()`` through both the loss and the penalty. Every per-example quantity relies
on examples being independent in the forward pass (true in eval mode and for models without
batch normalisation; in training mode batch normalisation couples them slightly).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.config.objectives import ContractiveObjectiveConfig, InputGradientObjectiveConfig
from robustlab.errors import ConfigError
from robustlab.train.objectives import OBJECTIVES, Objective, ObjectiveOutput, TrainingStep

ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Softplus,
    nn.Tanh,
    nn.Sigmoid,
)
"""Modules whose outputs are the "hidden layers" of the contractive penalty."""

PROBE_SEED = 0x5EED
"""Offset of the random projections' seed from the batch's index (see ``TrainingStep``)."""


def squared_norms(gradient: torch.Tensor) -> torch.Tensor:
    """Per-example squared L2 norm of a batch of input-shaped tensors, in fp32."""
    return gradient.float().pow(2).flatten(1).sum(1)


def input_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, create_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example CE, the logits, and each example's ∇ₓ CE (the gradient of the summed
    losses: example i's loss depends on x_i alone). ``x`` itself is left without a gradient."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    losses = F.cross_entropy(logits.float(), y, reduction="none")
    (gradient,) = torch.autograd.grad(losses.sum(), x, create_graph=create_graph)
    return losses, logits, gradient


@contextmanager
def captured_activations(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the output of every activation module during forward passes inside the block."""
    outputs: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        outputs.append(output)

    handles = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, ACTIVATIONS)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def jacobian_penalty(
    outputs: Sequence[torch.Tensor],
    x: torch.Tensor,
    projections: int,
    generator: torch.Generator,
    *,
    create_graph: bool = True,
) -> torch.Tensor:
    """Unbiased estimate of Σ_l ‖∂h_l/∂x‖²_F per example, averaged over the batch.

    Hutchinson's identity: for v ~ N(0, I), E‖vᵀJ‖² = tr(J Jᵀ) = ‖J‖²_F, and vᵀJ is one
    vector-Jacobian product, ∇ₓ(v·h). All layers share one product per projection: with an
    independent v_l per layer, E‖Σ_l v_lᵀJ_l‖² = Σ_l ‖J_l‖²_F since the cross terms have mean
    zero, so the cost is one double backprop per projection whatever the depth. ``x`` must be
    the leaf the ``outputs`` were computed from.
    """
    total = torch.zeros((), device=x.device)
    for _ in range(projections):
        projected = [
            (torch.randn(h.shape, generator=generator, device=h.device).to(h.dtype) * h).sum()
            for h in outputs
        ]  # grad of a list: the sum of the layers' vector-Jacobian products
        (product,) = torch.autograd.grad(projected, x, retain_graph=True, create_graph=create_graph)
        total = total + squared_norms(product).mean()
    return total / projections


class InputGradientObjective(Objective):
    """Input-gradient regularisation (Ross & Doshi-Velez 2018): CE + λ·mean_i ‖∇ₓ CE_i‖².

    A small input gradient means a small first-order change of the loss under any small
    perturbation, which is what an attack exploits.
    """

    def __init__(self, config: InputGradientObjectiveConfig) -> None:
        self.weight = config.weight

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: TrainingStep | None = None
    ) -> ObjectiveOutput:
        losses, logits, gradient = input_gradients(model, x, y, create_graph=True)
        loss = losses.mean() + self.weight * squared_norms(gradient).mean()
        return ObjectiveOutput(loss=loss, logits=logits)


class ContractiveObjective(Objective):
    """Deep contractive network (Gu & Rigazio 2015): CE + λ·Σ_l ‖∂h_l/∂x‖²_F.

    h_l are the outputs of the model's activation modules (``layers: hidden``) or the logits.
    The Frobenius norms are estimated by ``projections`` random projections (see
    ``jacobian_penalty``), drawn from a generator seeded by the batch's index, so a resumed
    run draws the same ones and the global random stream is left alone.
    """

    def __init__(self, config: ContractiveObjectiveConfig) -> None:
        self.weight = config.weight
        self.projections = config.projections
        self.layers = config.layers

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: TrainingStep | None = None
    ) -> ObjectiveOutput:
        x = x.detach().requires_grad_(True)
        with captured_activations(model) as hidden:
            logits = model(x)
        outputs = list(hidden) if self.layers == "hidden" else [logits]
        if not outputs:
            raise ConfigError(
                f"contractive objective with layers: hidden found no activation module "
                f"({', '.join(kind.__name__ for kind in ACTIVATIONS)}) in {type(model).__name__}"
                ": its activations are functional calls; set layers: logits"
            )
        generator = torch.Generator(device=x.device)
        generator.manual_seed(PROBE_SEED + (0 if step is None else step.index))
        penalty = jacobian_penalty(outputs, x, self.projections, generator)
        loss = F.cross_entropy(logits.float(), y) + self.weight * penalty
        return ObjectiveOutput(loss=loss, logits=logits)


OBJECTIVES.add(
    "input_gradient",
    InputGradientObjective,
    description="input-gradient regularisation: CE + λ·‖∇ₓ CE‖² (Ross & Doshi-Velez 2018)",
)
OBJECTIVES.add(
    "contractive",
    ContractiveObjective,
    description="deep contractive network: CE + λ·Σ‖∂h/∂x‖²_F, estimated (Gu & Rigazio 2015)",
)
