"""``IntegerNetwork``: a classifier that computes over integers only, from pixel to logit.

Pixels in [0, 1] become integers 0..levels (``quantize_inputs``; the client does this before
encrypting), then integer layers run (``layers.py``) and the result is integer logits whose
argmax is the class. ``output_scale`` turns logits back into the float model's units, for
comparisons only: the argmax needs no scale because the last layer has one scale for all
classes.

Saved as one ``.npz`` file: the arrays, and a JSON header describing the layers, read back
with ``allow_pickle=False`` so loading a file runs no code.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from robustlab.crypto.errors import ArtifactError
from robustlab.crypto.layers import (
    PLAIN,
    Conv,
    Dense,
    Flatten,
    Layer,
    Lookup,
    Ops,
    RangeCheck,
    SumPool,
    Tensor,
    int_array,
)
from robustlab.crypto.rounding import IntArray
from robustlab.io import atomic_write_bytes

FORMAT = "robustlab-integer-network/2"


@dataclass(frozen=True, eq=False)
class IntegerNetwork:
    input_shape: tuple[int, int, int]
    """(C, H, W) of one image."""
    input_levels: int
    """Pixels x in [0, 1] become round(x·input_levels), so inputs take input_levels + 1 values."""
    layers: tuple[Layer, ...]
    output_scale: float
    """float logits ≈ integer logits × output_scale."""
    meta: dict[str, Any] = field(default_factory=dict)
    """How it was made (bits, calibration, source run): saved with it, never read back by code."""

    def quantize_inputs(self, images: torch.Tensor | npt.NDArray[Any]) -> IntArray:
        """Pixels (N, C, H, W) in [0, 1] → integers 0..input_levels (values outside are clipped)."""
        array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
        array = np.asarray(array, dtype=np.float64)
        if array.ndim == 3:
            array = array[None]
        if tuple(array.shape[1:]) != self.input_shape:
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(array.shape)}"
            )
        return int_array(np.rint(np.clip(array, 0.0, 1.0) * self.input_levels))

    def forward(self, x: Tensor, ops: Ops = PLAIN) -> Tensor:
        """Integer inputs (N, C, H, W) → integer logits (N, classes); traced as-is under FHE."""
        for layer in self.layers:
            x = layer(x, ops)
        return x

    def logits(self, images: torch.Tensor | npt.NDArray[Any], batch_size: int = 1000) -> IntArray:
        """Integer logits of pixel images, computed in the clear in batches."""
        x = self.quantize_inputs(images)
        parts = [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return int_array(np.concatenate(parts) if parts else np.zeros((0, self.classes)))

    def predict(self, images: torch.Tensor | npt.NDArray[Any], batch_size: int = 1000) -> IntArray:
        return int_array(self.logits(images, batch_size).argmax(axis=1))

    def checked_logits(
        self, images: torch.Tensor | npt.NDArray[Any], batch_size: int = 1000
    ) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        """Integer logits and, per image, whether every accumulator fitted the width the
        circuit was compiled for (True: the encrypted result equals these logits)."""
        x = self.quantize_inputs(images)
        logits, inside = [], []
        for i in range(0, len(x), batch_size):
            check = RangeCheck(len(x[i : i + batch_size]))
            logits.append(self.forward(x[i : i + batch_size], check))
            inside.append(check.inside)
        if not logits:
            return int_array(np.zeros((0, self.classes))), np.zeros(0, dtype=bool)
        return int_array(np.concatenate(logits)), np.concatenate(inside)

    def in_range(self, images: torch.Tensor | npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        """Per image: True when it stays inside the compiled ranges (see ``checked_logits``)."""
        return self.checked_logits(images)[1]

    @property
    def classes(self) -> int:
        last = self.layers[-1]
        if not isinstance(last, Dense):
            raise ArtifactError("an integer network must end with a dense layer (the logits)")
        return int(last.weight.shape[1])

    @property
    def lookups(self) -> list[Lookup]:
        return [layer for layer in self.layers if isinstance(layer, Lookup)]

    def summary(self) -> dict[str, Any]:
        """Sizes that set the encrypted cost: table lookups per image, their widths, and the
        bits removed by exact rounding (each costs about one extra bootstrap per value)."""
        luts = rounded = 0
        shape: tuple[int, ...] = (1, *self.input_shape)
        probe = np.zeros(shape, dtype=np.int64)
        for layer in self.layers:
            probe = layer(probe, PLAIN)
            if isinstance(layer, Lookup):
                luts += int(probe.size)
                rounded += int(layer.lsbs.sum()) * int(probe.size) // len(layer.lsbs)
        return {
            "input_shape": list(self.input_shape),
            "input_levels": self.input_levels,
            "lookups_per_image": luts,
            "rounded_bits_per_image": rounded,
            "lookup_layers": [
                {
                    "lsbs": [int(v) for v in lookup.lsbs],
                    "accumulator_bits": [int(v) for v in lookup.bits],
                    "bits": lookup.lookup_bits,
                    "groups": len(lookup.groups),
                }
                for lookup in self.lookups
            ],
            "accumulator_bits": max(
                (layer.bits for layer in self.layers if isinstance(layer, (Dense, Conv))),
                default=0,
            ),
            "weights": int(
                sum(layer.weight.size for layer in self.layers if isinstance(layer, (Dense, Conv)))
            ),
        }

    # -- files -------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        arrays: dict[str, IntArray] = {}
        described: list[dict[str, Any]] = []
        for index, layer in enumerate(self.layers):
            described.append(_describe(layer, index, arrays))
        header = {
            "format": FORMAT,
            "input_shape": list(self.input_shape),
            "input_levels": self.input_levels,
            "output_scale": self.output_scale,
            "layers": described,
            "meta": self.meta,
        }
        buffer = io.BytesIO()
        text = json.dumps(header, sort_keys=True)
        members: dict[str, Any] = {"header": np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
        members.update(arrays)
        np.savez(buffer, **members)
        return buffer.getvalue()

    def fingerprint(self) -> str:
        """sha256 of what the network computes (not of ``meta``): names a circuit's source."""
        bare = IntegerNetwork(self.input_shape, self.input_levels, self.layers, self.output_scale)
        return hashlib.sha256(bare.to_bytes()).hexdigest()

    def save(self, path: str | Path) -> Path:
        return atomic_write_bytes(path, self.to_bytes())

    @staticmethod
    def from_bytes(data: bytes, source: str = "<bytes>") -> IntegerNetwork:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                header = json.loads(bytes(archive["header"]).decode("utf-8"))
                arrays = {name: int_array(archive[name]) for name in archive.files}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ArtifactError(
                f"{source} is not an integer-network file ({error}); write one with "
                "`robustlab fhe compile RUN_DIR`"
            ) from None
        if header.get("format") != FORMAT:
            raise ArtifactError(
                f"{source} has format {header.get('format')!r}, expected {FORMAT!r}; "
                "recompile it with this version of robustlab"
            )
        try:
            layers = tuple(_rebuild(entry, arrays) for entry in header["layers"])
            c, h, w = (int(v) for v in header["input_shape"])
            return IntegerNetwork(
                input_shape=(c, h, w),
                input_levels=int(header["input_levels"]),
                layers=layers,
                output_scale=float(header["output_scale"]),
                meta=dict(header.get("meta", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ArtifactError(f"{source}: damaged layer description ({error!r})") from None

    @staticmethod
    def load(path: str | Path) -> IntegerNetwork:
        file = Path(path)
        if not file.is_file():
            raise ArtifactError(f"{file} does not exist: compile one with `robustlab fhe compile`")
        return IntegerNetwork.from_bytes(file.read_bytes(), str(file))


def _describe(layer: Layer, index: int, arrays: dict[str, IntArray]) -> dict[str, Any]:
    def keep(name: str, array: IntArray) -> str:
        key = f"layer{index}_{name}"
        arrays[key] = array
        return key

    if isinstance(layer, Dense):
        return {
            "type": "dense",
            "weight": keep("weight", layer.weight),
            "bias": keep("bias", layer.bias),
            "bits": layer.bits,
        }
    if isinstance(layer, Conv):
        return {
            "type": "conv",
            "weight": keep("weight", layer.weight),
            "bias": keep("bias", layer.bias),
            "stride": layer.stride,
            "bits": layer.bits,
        }
    if isinstance(layer, SumPool):
        return {"type": "sumpool", "size": layer.size, "bits": layer.bits}
    if isinstance(layer, Flatten):
        return {"type": "flatten", "spatial": layer.spatial}
    return {
        "type": "lookup",
        "lsbs": keep("lsbs", layer.lsbs),
        "low": keep("low", layer.low),
        "tables": keep("tables", layer.tables),
        "bits": keep("bits", layer.bits),
    }


def _rebuild(entry: dict[str, Any], arrays: dict[str, IntArray]) -> Layer:
    kind = entry["type"]
    if kind == "dense":
        return Dense(arrays[entry["weight"]], arrays[entry["bias"]], int(entry["bits"]))
    if kind == "conv":
        return Conv(
            arrays[entry["weight"]],
            arrays[entry["bias"]],
            int(entry["stride"]),
            int(entry["bits"]),
        )
    if kind == "sumpool":
        return SumPool(int(entry["size"]), int(entry["bits"]))
    if kind == "flatten":
        return Flatten(int(entry["spatial"]))
    if kind == "lookup":
        return Lookup(
            arrays[entry["lsbs"]],
            arrays[entry["low"]],
            arrays[entry["tables"]],
            arrays[entry["bits"]],
        )
    raise ValueError(f"unknown layer type {kind!r}")
