"""PNG grids of clean and adversarial images with the model's predictions.

People want to *see* adversarial examples: row one is the clean input, row two the
adversarial one, row three the perturbation (amplified to fill the grey range), each titled
with the prediction so a change of class is visible at a glance. ``save_target_grid`` draws
the images an attack made toward every class, one row per starting image and model, so
models set side by side compare picture by picture (perceptual alignment, thesis Ch. 4.2).
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

from robustlab.io import atomic_write_bytes


def save_example_grid(
    path: str | Path,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    labels: torch.Tensor,
    clean_predictions: torch.Tensor,
    adversarial_predictions: torch.Tensor,
    class_names: Sequence[str],
    *,
    title: str = "",
    columns: int = 8,
) -> Path:
    count = min(columns, len(clean))
    figure = Figure(figsize=(1.6 * count, 5.4))
    axes = figure.subplots(3, count, squeeze=False)
    for column in range(count):
        perturbation = (adversarial[column] - clean[column]).float()
        scale = perturbation.abs().max().clamp_min(1e-12)
        panels = [
            (clean[column], f"{class_names[int(clean_predictions[column])]}", None),
            (
                adversarial[column],
                f"{class_names[int(adversarial_predictions[column])]}",
                int(adversarial_predictions[column]) != int(labels[column]),
            ),
            (0.5 + 0.5 * perturbation / scale, f"×{1 / float(scale):.1f}", None),
        ]
        for row, (image, caption, changed) in enumerate(panels):
            axis = axes[row][column]
            axis.imshow(_as_image(image), cmap="gray", vmin=0.0, vmax=1.0)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(caption, fontsize=8, color="crimson" if changed else "black")
    for row, label in enumerate(("clean", "adversarial", "perturbation")):
        axes[row][0].set_ylabel(label, fontsize=9)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())


TargetRows = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]
"""One model's row data: label, clean predictions (n,), images (n, classes, ...) toward each
class and the predictions (n, classes) for them."""


def save_target_grid(
    path: str | Path,
    starts: torch.Tensor,
    models: Sequence[TargetRows],
    class_names: Sequence[str],
    *,
    title: str = "",
) -> Path:
    """Rows: each starting image × each model; columns: the start, then one per target class,
    each captioned with the model's prediction (crimson where the target was not reached).

    One mosaic image on one axes, captions as text: a grid of separate axes per image costs
    matplotlib seconds per row (measured 2.5 s to build 44 axes on a busy 2-core machine)."""
    classes, height, width = len(class_names), starts.shape[-2], starts.shape[-1]
    rows, columns = len(starts) * len(models), classes + 1
    gap_x, gap_y = max(1, width // 8), max(3, height // 2)  # room for a caption above a cell
    cells = [[_as_image(starts[0]) for _ in range(columns)] for _ in range(rows)]
    captions: list[tuple[int, int, str, bool]] = []
    labels = []
    for start in range(len(starts)):
        for index, (label, clean, images, predictions) in enumerate(models):
            row = start * len(models) + index
            labels.append(f"#{start} {label}")
            cells[row][0] = _as_image(starts[start])
            captions.append((row, 0, f"start: {class_names[int(clean[start])]}", False))
            for target in range(classes):
                predicted = int(predictions[start, target])
                cells[row][target + 1] = _as_image(images[start, target])
                captions.append((row, target + 1, class_names[predicted], predicted != target))
    mosaic = _mosaic(cells, gap_x, gap_y)
    cell, margin, header = 0.75, 2.0, 0.8  # inches: an image, the row labels, title + classes
    size = (cell * columns + margin, cell * rows * _step_ratio(height, gap_y) + header)
    figure = Figure(figsize=size)
    left, top = margin / size[0], 1 - header / size[1]
    axis = figure.add_axes((left, 0.01, 0.99 - left, top - 0.01))
    axis.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axis.set_anchor("NW")  # beside the row labels, under the headers, whatever the aspect
    axis.set_axis_off()
    step_x, step_y = width + gap_x, height + gap_y
    for row, column, caption, missed in captions:
        axis.text(
            column * step_x + width / 2,
            row * step_y + gap_y - 0.4,
            caption,
            ha="center",
            va="bottom",
            fontsize=7,
            color="crimson" if missed else "black",
        )
    for row, label in enumerate(labels):
        middle = row * step_y + gap_y + height / 2
        wrapped = textwrap.fill(label, width=26)
        axis.text(-gap_x, middle, wrapped, ha="right", va="center", fontsize=7)
    for target in range(classes):
        center = (target + 1) * step_x + width / 2
        axis.text(center, -0.6, f"→ {class_names[target]}", ha="center", va="bottom", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())


def _step_ratio(height: int, gap: int) -> float:
    """Height of a mosaic row (image and caption gap) over the image's."""
    return (height + gap) / height


def _mosaic(
    cells: list[list[npt.NDArray[np.float32]]], gap_x: int, gap_y: int
) -> npt.NDArray[np.float32]:
    """Cells (H, W) or (H, W, 3) on a white canvas, ``gap_y`` rows above each and ``gap_x``
    columns after each."""
    first = cells[0][0]
    height, width = first.shape[:2]
    shape = (len(cells) * (height + gap_y), len(cells[0]) * (width + gap_x) - gap_x)
    canvas: npt.NDArray[np.float32] = np.ones(shape + first.shape[2:], dtype=np.float32)
    for row, line in enumerate(cells):
        for column, cell in enumerate(line):
            top, left = row * (height + gap_y) + gap_y, column * (width + gap_x)
            canvas[top : top + height, left : left + width] = cell
    return canvas


def _as_image(image: torch.Tensor) -> npt.NDArray[np.float32]:
    array: npt.NDArray[np.float32] = image.detach().float().cpu().clamp(0, 1).numpy()
    grey_or_rgb: npt.NDArray[np.float32] = (
        array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    )
    return grey_or_rgb
