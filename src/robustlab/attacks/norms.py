"""Threat models as small objects: the norm ball an attack's perturbation must stay inside.

Each norm supplies the three pieces an iterative attack needs — a random start inside the
ball, the steepest-ascent direction for a gradient, and the projection back onto the ball —
so the attack loop is written once for every norm. Perturbations ``delta`` are batched; the
first dimension indexes examples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from robustlab.registry import Registry

TINY = 1e-12


def _flat(delta: torch.Tensor) -> torch.Tensor:
    return delta.reshape(delta.shape[0], -1)


def per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-example vector to broadcast against a batch shaped like ``like``."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


class Norm(ABC):
    name: str

    @abstractmethod
    def size(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-example norm of the perturbation."""

    @abstractmethod
    def random_start(
        self, shape: torch.Size, eps: float, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """A random point inside the ball of radius ``eps``."""

    @abstractmethod
    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        """The unit-norm direction of steepest ascent of a linear function with this gradient."""

    @abstractmethod
    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        """The closest point of the ball (per example) to ``delta``."""


class LinfNorm(Norm):
    name = "linf"

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        return _flat(delta).abs().amax(dim=1)

    def random_start(
        self, shape: torch.Size, eps: float, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        return (torch.rand(shape, generator=generator, device=device) * 2 - 1) * eps

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        if isinstance(eps, torch.Tensor):
            bound = per_example(eps, delta)
            return torch.maximum(torch.minimum(delta, bound), -bound)
        return delta.clamp(-eps, eps)


class L2Norm(Norm):
    name = "l2"

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        norms: torch.Tensor = torch.linalg.vector_norm(_flat(delta), ord=2, dim=1)
        return norms

    def random_start(
        self, shape: torch.Size, eps: float, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        # Uniform in the ball: a Gaussian direction, radius eps * U^(1/d).
        direction = torch.randn(shape, generator=generator, device=device)
        direction = direction / per_example(self.size(direction).clamp_min(TINY), direction)
        dims = direction[0].numel()
        radius = torch.rand(shape[0], generator=generator, device=device) ** (1.0 / dims) * eps
        return direction * per_example(radius, direction)

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / per_example(self.size(grad).clamp_min(TINY), grad)

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        norms = self.size(delta)
        bound = eps if isinstance(eps, torch.Tensor) else torch.full_like(norms, eps)
        factor = torch.where(norms > bound, bound / norms.clamp_min(TINY), torch.ones_like(norms))
        return delta * per_example(factor, delta)


class L1Norm(Norm):
    name = "l1"

    sparsity: float = 0.99
    """Steepest direction uses only the top (1 - sparsity) share of gradient coordinates.

    The exact L1 steepest direction changes one coordinate per step, which is hopelessly slow;
    spreading the step over the largest coordinates is the usual compromise (Tramèr & Boneh,
    2019).
    """

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        return _flat(delta).abs().sum(dim=1)

    def random_start(
        self, shape: torch.Size, eps: float, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        # Laplace direction scaled to a uniform radius: inside the ball, spread over pixels.
        uniform = torch.rand(shape, generator=generator, device=device).clamp(TINY, 1 - TINY)
        signs = torch.where(torch.rand(shape, generator=generator, device=device) < 0.5, -1, 1)
        direction = -torch.log(uniform) * signs
        direction = direction / per_example(self.size(direction).clamp_min(TINY), direction)
        radius = torch.rand(shape[0], generator=generator, device=device) * eps
        return direction * per_example(radius, direction)

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        flat = _flat(grad)
        keep = max(1, round(flat.shape[1] * (1 - self.sparsity)))
        threshold = flat.abs().topk(keep, dim=1).values[:, -1:]
        chosen = torch.where(flat.abs() >= threshold, flat.sign(), torch.zeros_like(flat))
        chosen = chosen / chosen.abs().sum(dim=1, keepdim=True).clamp_min(TINY)
        return chosen.reshape(grad.shape)

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        """Exact Euclidean projection onto the L1 ball (sort-based, Duchi et al. 2008)."""
        flat = _flat(delta)
        count = flat.shape[0]
        bound = (eps if isinstance(eps, torch.Tensor) else torch.full((count,), eps)).to(flat)
        magnitude = flat.abs()
        inside = magnitude.sum(dim=1) <= bound
        ordered = magnitude.sort(dim=1, descending=True).values
        cumulative = ordered.cumsum(dim=1)
        ranks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
        candidates = ordered - (cumulative - bound[:, None]) / ranks
        last = (candidates > 0).to(flat.dtype).mul(ranks).argmax(dim=1)
        theta = (cumulative.gather(1, last[:, None]).squeeze(1) - bound) / (last + 1).to(flat)
        projected = flat.sign() * (magnitude - theta[:, None]).clamp_min(0)
        result = torch.where(inside[:, None], flat, projected)
        return result.reshape(delta.shape)


NORMS: Registry[Norm] = Registry("norm")
for _norm in (LinfNorm(), L2Norm(), L1Norm()):
    NORMS.add(_norm.name, _norm)


def get_norm(name: str) -> Norm:
    return NORMS.get(name)
