"""A PNG grid of clean and adversarial images with the model's predictions.

People want to *see* adversarial examples: row one is the clean input, row two the
adversarial one, row three the perturbation (amplified to fill the grey range), each titled
with the prediction so a change of class is visible at a glance.
"""

from __future__ import annotations

import io
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


def _as_image(image: torch.Tensor) -> npt.NDArray[np.float32]:
    array: npt.NDArray[np.float32] = image.detach().float().cpu().clamp(0, 1).numpy()
    grey_or_rgb: npt.NDArray[np.float32] = (
        array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    )
    return grey_or_rgb
