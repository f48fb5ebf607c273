"""The map's figures as PNG bytes: heatmaps over (depth, width) and measures against size.

Heatmap cells show the mean over seeds, written in the cell; rows are depths, columns widths,
so "more depth" reads downwards and "more width" rightwards. The scatter puts every grid point
at its parameter count (log scale) coloured by depth, with ± one standard deviation over
seeds, so iso-parameter comparisons are vertical lines.
"""

from __future__ import annotations

import io
import math

from matplotlib import colormaps
from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
from matplotlib.ticker import NullFormatter

from robustlab.experiments.kinds.plasticity.cells import GridPoint
from robustlab.experiments.kinds.plasticity.fit import seed_spread

HEATMAPS = (
    ("clean_after", "clean accuracy after (%)", 100.0),
    ("robust", "robust accuracy (%)", 100.0),
    ("robust_fit", "robust fit (%)", 100.0),
    ("cost", "robustness cost (points)", 1.0),
)


def _png(figure: Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _label(value: float) -> str:
    return f"{value:g}"


def heatmaps(points: list[GridPoint]) -> bytes:
    depths = sorted({point.depth for point in points})
    widths = sorted({point.width for point in points})
    figure = Figure(figsize=(4.2 * len(HEATMAPS), 0.7 * len(depths) + 2.2))
    for index, (measure, title, scale) in enumerate(HEATMAPS):
        axis = figure.add_subplot(1, len(HEATMAPS), index + 1)
        grid = [[math.nan] * len(widths) for _ in depths]
        for point in points:
            value = point.mean(measure)
            if value is not None:
                grid[depths.index(point.depth)][widths.index(point.width)] = scale * value
        image = axis.imshow(grid, cmap="viridis", aspect="auto")
        figure.colorbar(image, ax=axis, shrink=0.8)
        low, high = image.get_clim()
        for row, line in enumerate(grid):
            for column, value in enumerate(line):
                if not math.isnan(value):
                    bright = high > low and (value - low) / (high - low) > 0.6
                    axis.text(
                        column,
                        row,
                        f"{value:.1f}",
                        ha="center",
                        va="center",
                        color="black" if bright else "white",  # readable on viridis's yellow
                        fontsize=8,
                    )
        axis.set_xticks(range(len(widths)), [_label(w) for w in widths])
        axis.set_yticks(range(len(depths)), [_label(d) for d in depths])
        axis.set_xlabel("width")
        axis.set_ylabel("depth")
        axis.set_title(title, fontsize=10)
    return _png(figure)


def against_size(points: list[GridPoint]) -> bytes:
    """Cost and robust accuracy against parameter count, one colour per depth."""
    depths = sorted({point.depth for point in points})
    palette = colormaps["plasma"]
    figure = Figure(figsize=(10, 4))
    panels = (("cost", "robustness cost (points)", 1.0), ("robust", "robust accuracy (%)", 100.0))
    for index, (measure, title, scale) in enumerate(panels):
        axis = figure.add_subplot(1, 2, index + 1)
        for order, depth in enumerate(depths):
            colour = palette(order / max(1, len(depths) - 1) * 0.85)
            own = sorted((p for p in points if p.depth == depth), key=lambda p: p.parameters)
            xs, ys, errors = [], [], []
            for point in own:
                values = [scale * value for value in point.values(measure)]
                if values:
                    xs.append(point.parameters)
                    ys.append(sum(values) / len(values))
                    spread = seed_spread(values)
                    errors.append(0.0 if math.isnan(spread) else spread)
            if xs:
                axis.errorbar(
                    xs,
                    ys,
                    yerr=errors,
                    color=colour,
                    marker="o",
                    capsize=3,
                    label=f"depth {_label(depth)}",
                )
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap the major ones
        axis.set_xlabel("parameters")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _png(figure)
