"""One-pixel attack (Su, Vargas & Sakurai 2019): differential evolution over a few pixels.

A score-based black-box L0 attack: a candidate is ``pixels`` (row, column, value per channel)
tuples, its fitness is the probability the model gives the true class (or, targeted, minus the
target's), and differential evolution needs nothing but those scores. All examples' whole
populations are scored together in large batched forward passes, and an example leaves the
search the moment one of its candidates fools the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robustlab.attacks.base import Attack, AttackContext, fooled
from robustlab.attacks.registry import register_attack
from robustlab.attacks.validation import check_count, check_range, check_steps

ROW, COL, VALUES = 0, 1, 2
"""Gene layout of one pixel: row, column, then one value per channel."""


@register_attack
@dataclass(frozen=True, kw_only=True)
class OnePixel(Attack):
    """One-pixel attack: differential evolution over ``pixels`` (row, col, colour) tuples.

    Paper: Su, Vargas & Sakurai, "One Pixel Attack for Fooling Deep Neural Networks",
    IEEE Transactions on Evolutionary Computation, 2019.
    Threat model: L0 — at most ``pixels`` pixel locations change (all channels of a chosen
    pixel may change, to any value in [0, 1]); only output probabilities are read.

    Arguments: ``pixels`` pixels per candidate; ``population`` candidates per example
    (at least 4); ``iterations`` generations; ``F`` the mutation scale of DE/rand/1
    (child = a + F·(b − c) for three other random members); ``crossover`` None for none
    (the paper) or the binomial crossover rate CR in [0, 1]; ``max_batch`` images per forward
    pass. Coordinates start uniform and colours from N(0.5, 0.5) clipped to [0, 1] (the paper's
    N(128, 127) on 0–255); a child replaces its parent when its fitness is no worse. The search
    stops for an example once fooled, so ``early_stop`` changes nothing.
    At most ``1 + population·(iterations + 1)`` queries per example.

    Example: ``x_adv = OnePixel(pixels=1, population=400, iterations=100)(model, x, y)``
    """

    pixels: int = 1
    population: int = 400
    iterations: int = 100
    F: float = 0.5
    crossover: float | None = None
    max_batch: int = 8192

    name: ClassVar[str] = "one-pixel"
    THREAT: ClassVar[str] = "l0"

    def __post_init__(self) -> None:
        check_count(self, "pixels", self.pixels)
        check_count(self, "population", self.population, minimum=4)
        check_steps(self, "iterations", self.iterations)
        check_range(self, "F", self.F, minimum=0.0)
        if self.crossover is not None:
            check_range(self, "crossover", self.crossover, minimum=0.0, maximum=1.0)
        check_count(self, "max_batch", self.max_batch)

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"OnePixel needs images (N, C, H, W), got shape {tuple(x.shape)}")
        with torch.no_grad():
            return self._evolve(context, x, y, target)

    def _evolve(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        result = x.clone()
        active = (~fooled(context.logits(x), y, target)).nonzero().squeeze(1)
        if len(active) == 0:
            return result
        generator = context.generator
        population = self._initial(len(active), x.shape, generator, x.device)
        fitness, hit = self._score(context, x, y, target, active, population)
        for _ in range(self.iterations):
            active, population, fitness = self._retire(result, x, active, population, fitness, hit)
            if len(active) == 0:
                return result
            children = self._offspring(population, x.shape, generator)
            child_fitness, hit = self._score(context, x, y, target, active, children)
            better = (child_fitness <= fitness) | hit  # a fooling child always survives
            population = torch.where(better[:, :, None, None], children, population)
            fitness = torch.where(better, child_fitness, fitness)
        active, population, fitness = self._retire(result, x, active, population, fitness, hit)
        if len(active):
            best = fitness.argmin(dim=1)
            chosen = population[torch.arange(len(active), device=x.device), best]
            result[active] = _paint(x[active], chosen)
        return result

    def _retire(
        self,
        result: torch.Tensor,
        x: torch.Tensor,
        active: torch.Tensor,
        population: torch.Tensor,
        fitness: torch.Tensor,
        hit: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Write out the fittest fooling candidate of each fooled example and drop it."""
        won = hit.any(dim=1)
        if won.any():
            rows = won.nonzero().squeeze(1)
            masked = fitness[rows].masked_fill(~hit[rows], float("inf"))
            chosen = population[rows, masked.argmin(dim=1)]
            result[active[rows]] = _paint(x[active[rows]], chosen)
        keep = ~won
        return active[keep], population[keep], fitness[keep]

    def _initial(
        self, count: int, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """Population (A, P, pixels, 2 + C): coordinates uniform, colours N(0.5, 0.5)."""
        _, channels, height, width = shape
        size = (count, self.population, self.pixels)
        rows = torch.rand(size, generator=generator, device=device) * height
        cols = torch.rand(size, generator=generator, device=device) * width
        colours = torch.randn((*size, channels), generator=generator, device=device)
        colours = (0.5 + 0.5 * colours).clamp(0.0, 1.0)
        return torch.cat([rows[..., None], cols[..., None], colours], dim=-1)

    def _offspring(
        self, population: torch.Tensor, shape: torch.Size, generator: torch.Generator
    ) -> torch.Tensor:
        """DE/rand/1 mutation (plus optional binomial crossover), clipped to the bounds."""
        count, size = population.shape[:2]
        device = population.device
        first, second, third = _three_others(count, size, generator, device)
        owners = torch.arange(count, device=device)[:, None]
        base = population[owners, first]
        children = base + self.F * (population[owners, second] - population[owners, third])
        if self.crossover is not None:
            genes = population[0, 0].numel()
            take = (
                torch.rand((count, size, genes), generator=generator, device=device)
                < self.crossover
            )
            forced = torch.randint(0, genes, (count, size, 1), generator=generator, device=device)
            take = take.scatter(2, forced, True).reshape(children.shape)
            children = torch.where(take, children, population)
        _, _, height, width = shape
        return torch.cat(
            [
                children[..., ROW : ROW + 1].clamp(0.0, float(height)),
                children[..., COL : COL + 1].clamp(0.0, float(width)),
                children[..., VALUES:].clamp(0.0, 1.0),
            ],
            dim=-1,
        )

    def _score(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        active: torch.Tensor,
        population: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitness (to minimise) and success of every candidate, in batched forward passes."""
        count, size = population.shape[:2]
        owners = active.repeat_interleave(size)
        flat = population.reshape(count * size, *population.shape[2:])
        wanted = y if target is None else target
        fitness = torch.empty(count * size, device=x.device)
        hit = torch.empty(count * size, dtype=torch.bool, device=x.device)
        for start in range(0, len(flat), self.max_batch):
            part = slice(start, start + self.max_batch)
            who = owners[part]
            logits = context.logits(_paint(x[who], flat[part]))
            # Log-probability orders candidates exactly as probability does (DE only compares)
            # but does not saturate at 0 or 1 in float32 on confidently classified inputs.
            log_p = logits.log_softmax(dim=1).gather(1, wanted[who][:, None]).squeeze(1)
            fitness[part] = log_p if target is None else -log_p
            hit[part] = fooled(logits, y[who], None if target is None else target[who])
        return fitness.reshape(count, size), hit.reshape(count, size)


def _three_others(
    count: int, size: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each member of each population, three distinct other members, uniformly."""
    shape = (count, size)
    others = size - 1
    a = torch.randint(0, others, shape, generator=generator, device=device)
    b = torch.randint(0, others - 1, shape, generator=generator, device=device)
    b = b + (b >= a).long()
    c = torch.randint(0, others - 2, shape, generator=generator, device=device)
    low, high = torch.minimum(a, b), torch.maximum(a, b)
    c = c + (c >= low).long()
    c = c + (c >= high).long()
    # Offsets 1..size-1 from each member's own index never pick the member itself.
    own = torch.arange(size, device=device)
    first, second, third = ((own + 1 + pick) % size for pick in (a, b, c))
    return first, second, third


def _paint(images: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Copies of ``images`` (M, C, H, W) with each candidate's (M, k, 2 + C) pixels set."""
    count, channels, height, width = images.shape
    painted = images.clone().reshape(count, channels, height * width)
    rows = candidates[..., ROW].floor().long().clamp(0, height - 1)
    cols = candidates[..., COL].floor().long().clamp(0, width - 1)
    where = rows * width + cols
    for pixel in range(candidates.shape[1]):  # one at a time: a later duplicate wins
        index = where[:, pixel, None, None].expand(count, channels, 1)
        painted.scatter_(2, index, candidates[:, pixel, VALUES:, None])
    return painted.reshape(count, channels, height, width)
