"""Checkpoints that load without executing pickled code.

Model weights go to safetensors files (portable, no code). The full training state (weights,
optimiser moments, RNG states, position in the run) is a dict of tensors and plain values
saved with ``torch.save`` and read back only with ``torch.load(weights_only=True)``, which
refuses anything but tensors and builtin containers. Every write is atomic and records the
file's sha256 beside it; every read checks it first (``robustlab.store.integrity``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

from robustlab.errors import CheckpointError
from robustlab.store.integrity import load_verified, write_recorded

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
    objective: dict[str, Any] | None = None
    """The phase's objective's own state (``Objective.state_dict``); absent in older files."""


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
        "objective": state.objective,
    }
    write_recorded(path, lambda handle: torch.save(payload, handle))


def load_training_state(path: Path) -> TrainingState:
    def parse(data: bytes) -> Any:
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for corrupt or unsafe files
            raise CheckpointError(
                f"checkpoint {path} cannot be loaded safely ({type(error).__name__}: {error}); "
                "it may be corrupt, truncated or contain pickled code"
            ) from None

    payload = load_verified(path, "checkpoint", parse)
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
        objective=payload.get("objective"),
    )


def save_weights(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    data = safetensors_save(tensors)

    def write(handle: IO[bytes]) -> None:
        handle.write(data)

    write_recorded(path, write)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    def parse(data: bytes) -> dict[str, torch.Tensor]:
        try:
            tensors: dict[str, torch.Tensor] = safetensors_load(data)
        except Exception as error:
            raise CheckpointError(f"weights file {path} is corrupt or truncated: {error}") from None
        return tensors

    return load_verified(path, "weights file", parse)


def apply_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``tensors`` into ``model`` after checking that every name and shape fits, so a
    renamed, missing or reshaped tensor is one error naming it and the file, not a traceback."""
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    found = {name: tuple(value.shape) for name, value in tensors.items()}
    problems = []
    if missing := sorted(set(expected) - set(found)):
        problems.append(f"{_listed(missing)} missing")
    if unexpected := sorted(set(found) - set(expected)):
        problems.append(f"{_listed(unexpected)} unknown to the model")
    problems += [
        f"{name} has shape {list(found[name])}, the model needs {list(shape)}"
        for name, shape in expected.items()
        if name in found and found[name] != shape
    ]
    if problems:
        raise CheckpointError(
            f"{source} does not fit the run's model: "
            + "; ".join(problems)
            + ". The file was renamed or edited, or belongs to another model or config: point "
            "at the right run, or delete the run folder and train it again"
        )
    model.load_state_dict(tensors)


def _listed(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    noun = "tensor" if len(names) == 1 else "tensors"
    return f"{noun} " + ", ".join(names[:shown]) + more
