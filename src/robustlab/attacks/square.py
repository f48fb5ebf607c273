"""Square Attack (Andriushchenko et al. 2020): random search over square-shaped updates.

A score-based black-box attack: it reads the model's output scores and never a gradient, so
it is the check that a defence is not merely masking gradients. Each step proposes changing
one random square window of the current best perturbation and keeps the proposal only if the
loss improves; the window shrinks on the paper's schedule. Examples stop being queried the
moment they are fooled, and every query is counted per example (``run(...).queries``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch

from robustlab.attacks.base import Attack, AttackContext, AttackOutcome
from robustlab.attacks.losses import AttackLoss, cross_entropy, cw_margin
from robustlab.attacks.registry import register_attack
from robustlab.attacks.validation import check_count, check_eps, check_range
from robustlab.batching import FrozenForward, forward_only_view

SquareNorm = Literal["linf", "l2"]
SquareLoss = Literal["margin", "ce"]

SQUARE_LOSSES: dict[str, AttackLoss] = {"margin": cw_margin, "ce": cross_entropy}

PAPER_QUERIES = 10_000
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""Iterations (of a 10 000-query run) after which the window fraction p halves."""

RESAMPLES = 10
"""L∞ proposals identical to the current point are redrawn up to this often: a query spent on
an unchanged input can only be wasted (the authors' implementation redraws as well)."""

TINY = 1e-12


def window_fraction(p_init: float, iteration: int, queries: int) -> float:
    """The paper's schedule for p, the share of pixels a window covers, rescaled to the budget.

    ``iteration`` counts updates from 0; the marks in ``HALVINGS`` are for 10 000 queries and
    scale linearly with ``queries``, as in the paper.
    """
    scaled = int(iteration / queries * PAPER_QUERIES)
    halvings = sum(scaled > mark for mark in HALVINGS)
    return p_init / float(2**halvings)


@register_attack
@dataclass(frozen=True, kw_only=True)
class Square(Attack):
    """Square Attack: score-based black-box random search with square-shaped updates.

    Paper: Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient
    black-box adversarial attack via random search", ECCV 2020.
    Threat model: ``norm`` ball (L∞ or L2) of radius ``eps`` around x, intersected with [0, 1];
    only output scores are read (everything runs under ``torch.no_grad()``).

    Arguments: ``eps`` radius; ``norm`` "linf" or "l2"; ``queries`` model queries per example
    and restart (the initialisation included); ``p_init`` initial share of pixels a window
    covers; ``loss`` "margin" (logit margin, the paper's choice untargeted) or "ce"
    (cross-entropy, the paper's choice with ``target=``); ``restarts`` independent runs on the
    examples still unbroken. Proposals are accepted only if they improve the loss or fool the
    model, and fooled examples are never queried again, so ``early_stop`` changes nothing.
    One clean query per example comes first (already misclassified inputs are returned
    unchanged), so an example uses at most ``1 + restarts * queries`` queries.

    L∞: init with vertical stripes of ±eps, then each example gets its own random window
    (side from the p schedule) set to x ± eps, one sign per channel. L2: init with a grid of
    the paper's centre-mass patterns; each step moves the mass of a second random window into
    the first (pattern plus the window's old content), rescaled so the perturbation keeps norm
    eps — the paper's Algorithm 3, with per-example windows.

    Example: ``x_adv = Square(eps=0.3, queries=1000)(model, x, y)``; with counts,
    ``outcome = Square(eps=0.3).run(model, x, y)`` → ``outcome.x_adv``, ``outcome.queries``.
    """

    eps: float = 0.3
    norm: SquareNorm = "linf"
    queries: int = 5000
    p_init: float = 0.8
    loss: SquareLoss = "margin"
    restarts: int = 1

    name: ClassVar[str] = "square"

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"Square.norm must be 'linf' or 'l2', got {self.norm!r}")
        check_eps(self, self.eps, self.norm)
        check_count(self, "queries", self.queries)
        check_range(self, "p_init", self.p_init, minimum=0.0, maximum=1.0, inclusive=False)
        check_count(self, "restarts", self.restarts)
        if self.loss not in SQUARE_LOSSES:
            raise ValueError(f"Square.loss must be 'margin' or 'ce', got {self.loss!r}")

    @property
    def threat(self) -> str:
        return self.norm

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> AttackOutcome:
        if x.dim() != 4:
            raise ValueError(f"Square needs images (N, C, H, W), got shape {tuple(x.shape)}")
        # Thousands of forward passes and no gradient: a stand-in runs them faster. A frozen
        # copy is not the model, so the model itself confirms each success; the channels-last
        # view runs the model's own forward, so every query is seen once, as counted.
        view = forward_only_view(context.model, x)
        reference = context.model if isinstance(view, FrozenForward) else None
        fast = replace(context, model=view, reference=reference)
        with torch.no_grad():
            x_adv, queries = self._search(fast, x, y, target)
        return AttackOutcome(x_adv=x_adv, queries=queries)

    def _search(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Restarts on the examples not yet fooled; each keeps its best run. Also returns
        the queries per example, the clean one included."""
        queries = torch.ones(len(x), dtype=torch.long, device=x.device)
        done = context.success(context.logits(x), x, y, target)
        if self.eps == 0:  # nothing to search: the clean query is the whole attack
            return x.clone(), queries

        def run_once(
            x_sub: torch.Tensor,
            y_sub: torch.Tensor,
            t_sub: torch.Tensor | None,
            index: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            candidate, loss, won, used = self._single_run(context, x_sub, y_sub, t_sub)
            queries[index] += used
            return candidate, loss, won

        best = self._best_of_restarts(x, y, target, self.restarts, run_once, done=done)
        return best, queries

    def _single_run(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One random search of ``queries`` queries: (best x, its loss, fooled, queries used).

        The examples still searched are kept packed (``_Pack``) and repacked only when one is
        fooled, so an iteration gathers and scatters nothing for the examples that stay;
        at a few hundred images that bookkeeping, not the model, was most of the time.
        """
        loss_fn = SQUARE_LOSSES[self.loss]
        x_best = self._initial(x, context.generator)
        logits = context.logits(x_best)
        best_loss = loss_fn(logits, y, target)
        won = context.success(logits, x_best, y, target)
        used = torch.ones(len(x), dtype=torch.long, device=x.device)
        bounds = None
        if self.norm == "linf":  # per pixel: x - eps and x + eps, clamped to [0, 1]
            bounds = torch.stack([(x - self.eps).clamp(0.0, 1.0), (x + self.eps).clamp(0.0, 1.0)])
        pack = _Pack.of(~won, x, y, target, x_best, best_loss, bounds)
        iteration = 0
        while iteration < self.queries - 1 and len(pack.rows) > 0:
            p = window_fraction(self.p_init, iteration, self.queries)
            iteration += 1
            hit = self._query(context, pack, p, loss_fn)
            if bool(hit.any()):
                # Fooled now: final. Every example queried this round counts the query.
                rows = pack.rows[hit]
                x_best[rows], best_loss[rows] = pack.best[hit], pack.best_loss[hit]
                won[rows] = True
                used[rows] += iteration
                pack = pack.keep(~hit)
        x_best[pack.rows], best_loss[pack.rows] = pack.best, pack.best_loss
        used[pack.rows] += iteration
        return x_best, best_loss, won, used

    def _query(
        self, context: AttackContext, pack: _Pack, p: float, loss_fn: AttackLoss
    ) -> torch.Tensor:
        """Propose, query and keep improvements for every packed example; return the hits."""
        if self.norm == "linf":
            window = self._linf_window(pack, p, context.generator)
            proposal = window.paste(pack.best.clone())
        else:
            proposal = self._l2_step(pack.x, pack.best, p, context.generator)
        logits = context.logits(proposal)
        loss = loss_fn(logits, pack.y, pack.target)
        hit = context.success(logits, proposal, pack.y, pack.target)
        accept = (hit | (loss > pack.best_loss)).nonzero().squeeze(1)
        if self.norm == "linf":
            window.select(accept).paste(pack.best)
        else:
            pack.best[accept] = proposal[accept]
        pack.best_loss[accept] = loss[accept]
        return hit

    def _initial(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, channels, height, width = x.shape
        if self.norm == "linf":
            # One sign per (example, channel, column): vertical stripes, which the paper found
            # to be a strong start because CNNs are sensitive to high-frequency patterns.
            stripes = _random_signs((n, channels, 1, width), generator, x.device)
            return (x + self.eps * stripes).clamp(0.0, 1.0)
        delta = _l2_grid(n, channels, height, width, generator, x.device)
        return (x + _rescale(delta, self.eps)).clamp(0.0, 1.0)

    def _linf_window(self, pack: _Pack, p: float, generator: torch.Generator) -> _Window:
        """One random window per example set to x ± eps (a sign per channel), as a window.

        Only the window's pixels are read and compared: the rest of the proposal is the
        current point. Late in the search the windows fall inside uniform areas of the
        perturbation, where a draw repeats the current values half the time, so an
        iteration takes several redraw rounds (measured: 5.9 on average over a run); a round
        therefore touches nothing but the windows, and takes x ± eps ready-made from
        ``pack.bounds`` (the same values as computing x + eps · sign, clamped).
        """
        x, current, bounds = pack.x, pack.best, pack.bounds
        assert bounds is not None
        n, channels, height, width = x.shape
        side = min(max(round(math.sqrt(p * height * width)), 1), height, width)
        offsets = _window_offsets(channels, height, width, side, x.device)
        plane = channels * height * width
        pending = torch.arange(n, device=x.device)
        window: _Window | None = None
        for _ in range(RESAMPLES):
            top, left = _window_corners(len(pending), height, width, side, generator, x.device)
            upper = _random_bits((len(pending), channels, 1, 1), generator, x.device)
            corner = pending * plane + top * width + left
            at = corner.view(-1, 1, 1, 1) + offsets
            values = bounds.take(at + upper * (n * plane))  # bounds[upper] at the window
            drawn = _Window(at, values)
            if window is None:
                window = drawn
            else:
                window.assign(pending, drawn)
            unchanged = values.eq(current.take(at)).view(len(pending), -1).all(dim=1)
            pending = pending[unchanged]
            if len(pending) == 0:
                break
        assert window is not None  # RESAMPLES >= 1
        return window

    def _l2_step(
        self, x: torch.Tensor, current: torch.Tensor, p: float, generator: torch.Generator
    ) -> torch.Tensor:
        """The paper's Algorithm 3: move window 2's mass into window 1 as a fresh pattern."""
        n, channels, height, width = x.shape
        side = max(round(math.sqrt(p * height * width)), 3)
        side = min(side + 1 if side % 2 == 0 else side, height, width)
        delta = current - x
        top1, left1 = _window_corners(n, height, width, side, generator, x.device)
        top2, left2 = _window_corners(n, height, width, side, generator, x.device)
        first = _window_mask(top1, left1, side, height, width)
        either = first | _window_mask(top2, left2, side, height, width)

        old_first = delta * first
        pattern = _place(_patterns(n, side, generator, x.device), top1, left1, height, width)
        signs = _random_signs((n, channels, 1, 1), generator, x.device)
        fresh = pattern * signs + old_first / _channel_norm(old_first).clamp_min(TINY)
        fresh = fresh / _channel_norm(fresh).clamp_min(TINY)
        # Budget for window 1, per channel: what windows 1 and 2 held plus an equal share of
        # what the whole perturbation has left unused (box clipping returns budget too).
        unused = (self.eps**2 - _example_norm(delta) ** 2).clamp_min(0.0)
        available = (_channel_norm(delta * either) ** 2 + unused / channels).sqrt()
        moved = torch.where(either, torch.zeros_like(delta), delta) + fresh * available
        return (x + _project_l2(moved, self.eps)).clamp(0.0, 1.0)


@dataclass
class _Pack:
    """The examples a search still queries, packed: row i of every tensor is example
    ``rows[i]`` of the batch. Repacked (``keep``) only when examples leave."""

    rows: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    best: torch.Tensor
    best_loss: torch.Tensor
    bounds: torch.Tensor | None
    """L∞: (2, N, C, H, W), the lowest and the highest value each pixel may take."""

    @classmethod
    def of(
        cls,
        todo: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        best: torch.Tensor,
        best_loss: torch.Tensor,
        bounds: torch.Tensor | None,
    ) -> _Pack:
        # Contiguous, so that windows can address pixels by flat position.
        whole = cls(torch.arange(len(x), device=x.device), x, y, target, best, best_loss, bounds)
        return whole.keep(todo)

    def keep(self, still: torch.Tensor) -> _Pack:
        """The pack without the rows where ``still`` is False (gathered anew: contiguous)."""
        index = still.nonzero().squeeze(1)
        return _Pack(
            self.rows[index],
            self.x[index],
            self.y[index],
            None if self.target is None else self.target[index],
            self.best[index].contiguous(),
            self.best_loss[index],
            None if self.bounds is None else self.bounds[:, index].contiguous(),
        )


@dataclass
class _Window:
    """A window per example of a contiguous (N, C, H, W) batch: ``index`` holds the flat
    positions of its pixels, (N, C, side, side), and ``values`` what to write there.

    Flat positions make reading and writing a window one ``take`` or ``put`` on a few
    pixels; advanced indexing with row and column tensors cost several times more.
    """

    index: torch.Tensor
    values: torch.Tensor | None = None

    def paste(self, batch: torch.Tensor) -> torch.Tensor:
        """Write ``values`` into ``batch`` (contiguous) in place, and return it."""
        assert self.values is not None
        batch.view(-1)[self.index] = self.values
        return batch

    def select(self, rows: torch.Tensor) -> _Window:
        assert self.values is not None
        return _Window(self.index[rows], self.values[rows])

    def assign(self, rows: torch.Tensor, other: _Window) -> None:
        """Replace the windows of ``rows`` (in this window's order) by ``other``'s."""
        assert self.values is not None and other.values is not None
        self.index[rows] = other.index
        self.values[rows] = other.values


@functools.lru_cache(maxsize=64)
def _window_offsets(
    channels: int, height: int, width: int, side: int, device: torch.device
) -> torch.Tensor:
    """Flat offsets (1, C, side, side) of a window's pixels from its top-left pixel in
    channel 0 of its example. Cached: a search asks for the same few sides thousands of
    times (callers must not modify the tensor)."""
    channel = torch.arange(channels, device=device)[:, None, None] * (height * width)
    row = torch.arange(side, device=device)[None, :, None] * width
    col = torch.arange(side, device=device)[None, None, :]
    return (channel + row + col)[None]


def _random_bits(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """0 or 1 with equal odds (int64); ``_random_signs`` draws the same numbers."""
    return torch.randint(0, 2, shape, generator=generator, device=device)


def _random_signs(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    return _random_bits(shape, generator, device).float() * 2 - 1


def _window_corners(
    count: int, height: int, width: int, side: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners of one uniformly placed ``side``-square window per example."""
    top = torch.randint(0, height - side + 1, (count,), generator=generator, device=device)
    left = torch.randint(0, width - side + 1, (count,), generator=generator, device=device)
    return top, left


def _window_mask(
    top: torch.Tensor, left: torch.Tensor, side: int, height: int, width: int
) -> torch.Tensor:
    """Boolean (N, 1, H, W): True inside each example's window."""
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _place(
    patterns: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Paste (N, s, s) patterns into zero (N, 1, H, W) canvases at the given corners."""
    n, side, _ = patterns.shape
    offsets = torch.arange(side, device=patterns.device)
    rows = (top[:, None] + offsets)[:, :, None]
    cols = (left[:, None] + offsets)[:, None, :]
    canvas = patterns.new_zeros(n, height, width)
    canvas[torch.arange(n, device=patterns.device)[:, None, None], rows, cols] = patterns
    return canvas[:, None]


def _centre_mass(rows: int, cols: int) -> torch.Tensor:
    """The paper's M(r, s) pattern: nested squares around the centre, weights 1/(k+1)²."""
    if rows == 0:
        return torch.zeros(0, cols)
    centre_r, centre_c = rows // 2, cols // 2
    levels = max(centre_r, centre_c) + 1
    r = torch.arange(rows)[:, None]
    c = torch.arange(cols)[None, :]
    distance = torch.maximum((r - centre_r).abs(), (c - centre_c).abs())
    weights = 1.0 / torch.arange(1, levels + 1, dtype=torch.float32) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum of weights[d:]
    pattern: torch.Tensor = tail[distance]
    return pattern


def _eta(side: int) -> torch.Tensor:
    """The paper's η: a positive centre-mass half above a negative one, unit L2 norm."""
    half = side // 2
    pattern = torch.cat([_centre_mass(half, side), -_centre_mass(side - half, side)])
    unit: torch.Tensor = pattern / pattern.pow(2).sum().sqrt()
    return unit


def _patterns(
    count: int, side: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """η for each example, transposed for a random half of them."""
    eta = _eta(side).to(device)
    flip = torch.randint(0, 2, (count, 1, 1), generator=generator, device=device).bool()
    return torch.where(flip, eta.T, eta)


def _l2_grid(
    n: int,
    channels: int,
    height: int,
    width: int,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """The L2 start: a centred grid of tiles of side min(H, W)/5, each ±η per channel."""
    tile = max(min(height, width) // 5, 1)
    tiles_down, tiles_across = height // tile, width // tile
    top0 = (height - tiles_down * tile) // 2
    left0 = (width - tiles_across * tile) // 2
    delta = torch.zeros(n, channels, height, width, device=device)
    for i in range(tiles_down):
        for j in range(tiles_across):
            top = torch.full((n,), top0 + i * tile, dtype=torch.long, device=device)
            left = torch.full((n,), left0 + j * tile, dtype=torch.long, device=device)
            pattern = _place(_patterns(n, tile, generator, device), top, left, height, width)
            delta += pattern * _random_signs((n, channels, 1, 1), generator, device)
    return delta


def _channel_norm(delta: torch.Tensor) -> torch.Tensor:
    """L2 norm over the pixels of each (example, channel): shape (N, C, 1, 1)."""
    return delta.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()


def _example_norm(delta: torch.Tensor) -> torch.Tensor:
    """L2 norm of each example's perturbation: shape (N, 1, 1, 1)."""
    return delta.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt()


def _rescale(delta: torch.Tensor, eps: float) -> torch.Tensor:
    return delta * (eps / _example_norm(delta).clamp_min(TINY))


def _project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    norms = _example_norm(delta)
    return torch.where(norms > eps, delta * (eps / norms.clamp_min(TINY)), delta)
