"""Checkpoints that load without executing pickled code.

Model weights go to safetensors files (portable, no code). The full training state (weights,
optimiser moments, RNG states, position in the run) is a dict of tensors and plain values
saved with ``torch.save`` and read back only with ``torch.load(weights_only=True)``, which
refuses anything but tensors and builtin containers. Every write is atomic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from robustlab.errors import CheckpointError
from robustlab.io import atomic_write, atomic_write_bytes

CHECKPOINT_FORMAT = 1


@dataclass
class TrainingState:
    """Everything needed to continue a run exactly where it stopped."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    phase_index: int
    """Index of the phase the last completed epoch belongs to."""
    epoch_in_phase: int
    """Epochs of that phase completed (1-based count)."""
    global_epoch: int
    torch_rng: torch.Tensor
    shuffle_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None
    train_seconds: float


def save_training_state(path: Path, state: TrainingState) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": state.model,
        "optimizer": state.optimizer,
        "phase_index": state.phase_index,
        "epoch_in_phase": state.epoch_in_phase,
        "global_epoch": state.global_epoch,
        "torch_rng": state.torch_rng,
        "shuffle_rng": state.shuffle_rng,
        "cuda_rng": state.cuda_rng,
        "train_seconds": state.train_seconds,
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_training_state(path: Path) -> TrainingState:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely ({type(error).__name__}: {error}); "
            "it may be corrupt, truncated or contain pickled code"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not a robustlab training checkpoint (format "
            f"{CHECKPOINT_FORMAT} expected)"
        )
    return TrainingState(
        model=payload["model"],
        optimizer=payload["optimizer"],
        phase_index=int(payload["phase_index"]),
        epoch_in_phase=int(payload["epoch_in_phase"]),
        global_epoch=int(payload["global_epoch"]),
        torch_rng=payload["torch_rng"],
        shuffle_rng=payload["shuffle_rng"],
        cuda_rng=payload["cuda_rng"],
        train_seconds=float(payload["train_seconds"]),
    )


def save_weights(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    atomic_write_bytes(path, safetensors_save(tensors))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"weights file {path} does not exist") from None
    try:
        tensors: dict[str, torch.Tensor] = safetensors_load(data)
    except Exception as error:
        raise CheckpointError(f"weights file {path} is corrupt or truncated: {error}") from None
    return tensors
