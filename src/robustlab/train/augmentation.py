"""Training-time augmentation for natural images: random crop after zero padding, and
horizontal flip (the standard CIFAR recipe of He et al. 2016, used by every CIFAR
adversarial-training baseline; without it PGD training overfits badly, Rice et al. 2020).

Each batch draws from its own generator seeded by the run's seed and the batch's index, so a
resumed run augments exactly as an uninterrupted one and the global RNG is not touched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustlab.config import AugmentConfig


def augment_batch(x: torch.Tensor, config: AugmentConfig, seed: int, index: int) -> torch.Tensor:
    """``x`` (N×C×H×W) with each image shifted by up to ``crop_padding`` pixels in each
    direction (zero fill) and, with ``flip``, mirrored left-right with probability 1/2."""
    # the CPU generator keeps 32 bits of its seed: mix the run's seed in, not above them
    generator = torch.Generator().manual_seed((seed * 0x9E3779B1 + index) & 0xFFFFFFFF)
    count, channels, height, width = x.shape
    padding = config.crop_padding
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        offsets = torch.randint(0, 2 * padding + 1, (2, count), generator=generator)
        rows = (offsets[0][:, None] + torch.arange(height)).to(x.device)
        columns = (offsets[1][:, None] + torch.arange(width)).to(x.device)
        images = torch.arange(count, device=x.device)[:, None, None, None]
        planes = torch.arange(channels, device=x.device)[None, :, None, None]
        x = padded[images, planes, rows[:, None, :, None], columns[:, None, None, :]]
    if config.flip:
        mirrored = (torch.rand(count, generator=generator) < 0.5).to(x.device)
        x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
    return x
