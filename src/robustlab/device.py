"""Choose the compute device at run time, so the same config runs on a laptop CPU or a GPU."""

from __future__ import annotations

import torch

from robustlab.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, else CPU; an unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device: {name!r} is not a device (use auto, cpu, cuda or cuda:N)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} was requested but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device: {name!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return device
