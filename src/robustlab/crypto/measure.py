"""Timings and agreement: Table 3.1's rows (plain float, plain integer, encrypted) measured on
the machine at hand, and an encrypted batch checked against the plain integer network.

Each latency is for one image at a time (batch size 1), as a client would send them; the
encrypted row runs the real protocol in process (keygen, encrypt, evaluate, decrypt).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.crypto.artifact import manifest_rounding
from robustlab.crypto.backend import Rounding, simulated_logits
from robustlab.crypto.network import IntegerNetwork
from robustlab.crypto.protocol import ClientBundle, FheClient, FheServer


def float_latency(model: nn.Module, images: torch.Tensor, repeats: int = 1) -> float:
    """Seconds per image of the float model, one image per call."""
    model.eval()
    with torch.no_grad():
        model(images[:1])  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            for image in images:
                model(image[None])
    return (time.perf_counter() - started) / (repeats * len(images))


def integer_latency(network: IntegerNetwork, images: torch.Tensor, repeats: int = 1) -> float:
    """Seconds per image of the plain integer network, one image per call."""
    inputs = network.quantize_inputs(images)
    network.forward(inputs[:1])
    started = time.perf_counter()
    for _ in range(repeats):
        for row in inputs:
            network.forward(row[None])
    return (time.perf_counter() - started) / (repeats * len(inputs))


@dataclass(frozen=True)
class EncryptedRun:
    images: int
    accuracy: float
    plain_accuracy: float
    agreement: float
    """Share of images inside the compiled ranges whose decrypted logits equal the plain
    integer logits exactly (out-of-range images are never counted as agreeing)."""
    argmax_agreement: float
    """Share of in-range images whose decrypted class is the plain network's: what an
    approximately rounded circuit can still promise."""
    rounding: Rounding
    """The artifact's rounding: ``"exact"`` or ``"approximate"``."""
    keygen_s: float
    encrypt_s: float
    run_s: float
    decrypt_s: float
    """Per image, except keygen (once per client)."""
    first_run_s: float
    """The first evaluation after keygen, on the first image, kept out of ``run_s``: it was
    1.5–1.7× slower than the ones after it (concrete warming up), a cost paid once per
    server process, not per image."""
    evaluation_key_bytes: int
    input_bytes: int
    output_bytes: int
    mismatches: list[int]
    """In-range images whose decrypted logits differ: a bug with exact rounding, expected
    (near rounding boundaries) with approximate rounding."""
    out_of_range: list[int]
    """Images that left a calibrated range: their encrypted result may differ, so they are
    reported here and excluded from ``agreement``."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def encrypted_run(
    artifact: str | Path,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int | None = None,
) -> EncryptedRun:
    """Encrypt, evaluate and decrypt ``images`` one by one through the client/server protocol."""
    server = FheServer(artifact)
    network = IntegerNetwork.load(Path(artifact) / "network.npz")
    client = FheClient(ClientBundle.from_artifact(artifact))
    started = time.perf_counter()
    client.keygen(seed)
    keygen_s = time.perf_counter() - started
    keys = client.evaluation_keys()
    client_id = server.register(keys)
    first_run_s = _first_run(client, server, client_id, images)
    plain, inside = network.checked_logits(images)
    encrypt_s = run_s = decrypt_s = 0.0
    correct = agree = same_class = 0
    mismatches: list[int] = []
    input_bytes = output_bytes = 0
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        t0 = time.perf_counter()
        message = client.encrypt(image.numpy())
        t1 = time.perf_counter()
        answer = server.evaluate(client_id, message)
        t2 = time.perf_counter()
        logits = client.decrypt(answer)
        t3 = time.perf_counter()
        encrypt_s, run_s, decrypt_s = encrypt_s + t1 - t0, run_s + t2 - t1, decrypt_s + t3 - t2
        input_bytes, output_bytes = len(message), len(answer)
        correct += int(logits.argmax() == int(label))
        if not inside[index]:
            continue
        same_class += int(logits.argmax() == plain[index].argmax())
        if np.array_equal(logits, plain[index]):
            agree += 1
        else:
            mismatches.append(index)
    count = max(len(images), 1)
    checked = max(int(inside.sum()), 1)
    plain_correct = int((plain.argmax(axis=1) == labels.numpy()).sum())
    return EncryptedRun(
        images=len(images),
        accuracy=correct / count,
        plain_accuracy=plain_correct / count,
        agreement=agree / checked,
        argmax_agreement=same_class / checked,
        rounding=manifest_rounding(server.manifest),
        keygen_s=keygen_s,
        encrypt_s=encrypt_s / count,
        run_s=run_s / count,
        decrypt_s=decrypt_s / count,
        first_run_s=first_run_s,
        evaluation_key_bytes=len(keys),
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        mismatches=mismatches,
        out_of_range=[int(i) for i in np.flatnonzero(~inside)],
    )


def simulated_accuracy(
    network: IntegerNetwork,
    traced: np.ndarray[Any, Any],
    images: torch.Tensor,
    labels: torch.Tensor,
    rounding: Rounding = "approximate",
) -> dict[str, Any]:
    """The circuit's accuracy on ``images`` by concrete's simulation, and how often it keeps
    the plain network's class and logits: how an approximately rounded circuit is judged,
    since the plain network cannot reproduce its rounding errors."""
    started = time.perf_counter()
    logits = simulated_logits(network, traced, network.quantize_inputs(images), rounding)
    plain = network.logits(images)
    return {
        "accuracy": float((logits.argmax(1) == labels.numpy()).mean()),
        "same_class": float((logits.argmax(1) == plain.argmax(1)).mean()),
        "identical": float((logits == plain).all(1).mean()),
        "images": len(images),
        "seconds": time.perf_counter() - started,
    }


def _first_run(client: FheClient, server: FheServer, client_id: str, images: torch.Tensor) -> float:
    """Seconds of the first evaluation after keygen (the warm-up), timed apart from the
    per-image average."""
    if not len(images):
        return 0.0
    message = client.encrypt(images[0].numpy())
    started = time.perf_counter()
    server.evaluate(client_id, message)
    return time.perf_counter() - started


def accuracy(predicted: np.ndarray[Any, Any], labels: torch.Tensor) -> float:
    return float((np.asarray(predicted) == labels.numpy()).mean()) if len(labels) else 0.0


def float_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [model(images[i : i + 1000]).argmax(1) for i in range(0, len(images), 1000)]
        )
    return float((predicted == labels).float().mean())
