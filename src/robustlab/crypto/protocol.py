"""The thesis's Figure 3.1 as an API: a client that owns the secret key and a server that
computes on what it cannot read.

``FheClient`` makes keys from the circuit's client specs, encrypts quantised images and
decrypts logits; it needs no weights. ``FheServer`` holds the compiled circuit (loaded only
after its checksums are verified) and, per client, evaluation keys, which let it compute but
not decrypt; they are filed by owner (the uploading token) in a ``KeyStore`` whose quotas no
client can use to evict another. Everything that crosses between them is enveloped bytes
(``envelope.py``), so a mix-up of circuits or keys is an error, not garbage.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from robustlab.crypto.artifact import (
    client_manifest,
    load_server,
    read_client_specs,
    read_manifest,
    verify_artifact,
)
from robustlab.crypto.auth import ANONYMOUS
from robustlab.crypto.backend import require_concrete
from robustlab.crypto.envelope import Envelope, checksum, open_envelope, open_envelope_file, seal
from robustlab.crypto.errors import (
    CryptoError,
    EnvelopeError,
    MismatchError,
    UnknownClientError,
)
from robustlab.crypto.keystore import KeyStore
from robustlab.crypto.limits import Quotas
from robustlab.crypto.rounding import IntArray
from robustlab.io import atomic_write_bytes


@dataclass(frozen=True)
class ClientBundle:
    """What a client gets from a server or an artifact: the specs and the input format."""

    specs: bytes
    manifest: dict[str, Any]
    """``artifact.client_manifest`` fields: circuit, input_shape, input_levels, classes, ..."""

    @property
    def circuit(self) -> str:
        return str(self.manifest["circuit"])

    @staticmethod
    def from_artifact(directory: str | Path) -> ClientBundle:
        manifest = read_manifest(directory)
        return ClientBundle(read_client_specs(directory, manifest), client_manifest(manifest))


class FheClient:
    """Key generation, encryption of images and decryption of logits, for one circuit."""

    def __init__(self, bundle: ClientBundle) -> None:
        self.fhe = require_concrete()
        if checksum(bundle.specs) != bundle.circuit:
            raise MismatchError(
                "the client specs do not match their circuit id; fetch them again from the "
                "server or the artifact"
            )
        self.bundle = bundle
        specs = self.fhe.ClientSpecs.deserialize(bundle.specs)
        self._client = self.fhe.Client(specs)
        self._key_id = ""

    @property
    def key_id(self) -> str:
        if not self._key_id:
            raise CryptoError("no keys yet: call keygen() or load_keys() first")
        return self._key_id

    def keygen(self, seed: int | None = None) -> None:
        """Fresh secret and evaluation keys (``seed`` only for reproducible tests)."""
        self._client.keygen(force=True, secret_seed=seed, encryption_seed=seed)
        self._key_id = checksum(self._client.evaluation_keys.serialize())

    def evaluation_keys(self) -> bytes:
        """The public evaluation keys to upload once; they cannot decrypt anything."""
        payload = self._client.evaluation_keys.serialize()
        return seal("evaluation-keys", self.bundle.circuit, self.key_id, payload)

    def quantize(self, image: npt.NDArray[Any]) -> IntArray:
        """Pixels in [0, 1] (C, H, W) → the integer input the circuit expects."""
        shape = tuple(int(v) for v in self.bundle.manifest["input_shape"])
        array = np.asarray(image, dtype=np.float64)
        if array.size != int(np.prod(shape)):
            raise CryptoError(f"an image must have {int(np.prod(shape))} pixels {shape}")
        levels = int(self.bundle.manifest["input_levels"])
        pixels: IntArray = np.rint(np.clip(array, 0.0, 1.0) * levels).astype(np.int64)
        return pixels.reshape((1, *shape))

    def encrypt(self, image: npt.NDArray[Any]) -> bytes:
        """One image in [0, 1] pixels, quantised and encrypted under this client's key."""
        value = self._client.encrypt(self.quantize(image))
        return seal("input", self.bundle.circuit, self.key_id, value.serialize())

    def decrypt(self, message: bytes) -> IntArray:
        """Integer logits (classes,) from the server's answer."""
        envelope = open_envelope(
            message, kind="output", circuit=self.bundle.circuit, key=self.key_id, source="answer"
        )
        try:
            value = self.fhe.Value.deserialize(envelope.payload)
        except Exception as error:
            raise EnvelopeError(f"the answer's ciphertext is malformed ({error})") from None
        logits: IntArray = np.asarray(self._client.decrypt(value), dtype=np.int64).reshape(-1)
        return logits

    def save_keys(self, path: str | Path) -> Path:
        """The secret keys, for this client only (keep the file private)."""
        keys = self._client.keys.serialize()
        return atomic_write_bytes(path, seal("secret-keys", self.bundle.circuit, self.key_id, keys))

    def load_keys(self, path: str | Path) -> None:
        file = Path(path)
        if not file.is_file():
            raise CryptoError(f"{file} does not exist: generate keys with keygen() first")
        envelope = open_envelope(
            file.read_bytes(), kind="secret-keys", circuit=self.bundle.circuit, source=str(file)
        )
        try:
            self._client.keys = self.fhe.Keys.deserialize(envelope.payload)
        except Exception as error:
            raise EnvelopeError(f"{file}: the keys are malformed ({error})") from None
        self._key_id = envelope.key


class FheServer:
    """Evaluates encrypted inputs with per-client evaluation keys; never sees a secret key.

    ``owner`` names who uploaded a key set (the service's token name); the library's own
    callers leave it at ``ANONYMOUS``. A client id is only found with the owner that uploaded it.
    """

    def __init__(
        self,
        directory: str | Path,
        max_clients: int | None = None,
        quotas: Quotas | None = None,
        expected_digest: str | None = None,
    ) -> None:
        fhe = require_concrete()
        self.fhe = fhe
        self.manifest = read_manifest(directory)
        verify_artifact(directory, self.manifest, expected_digest)
        self.bundle = ClientBundle(
            read_client_specs(directory, self.manifest), client_manifest(self.manifest)
        )
        self._server = load_server(directory, self.manifest)
        quotas = quotas or Quotas()
        if max_clients is not None:
            quotas = replace(quotas, max_clients=max_clients)
        self.keys = KeyStore(quotas)
        statistics = self.manifest.get("statistics", {})
        # A key set's size once expanded (seeded keys grow on the server): what quotas count.
        self.key_set_bytes = int(statistics.get("bootstrap_key_bytes", 0)) + int(
            statistics.get("keyswitch_key_bytes", 0)
        )
        self._lock = threading.Lock()

    @property
    def circuit(self) -> str:
        return self.bundle.circuit

    @property
    def max_clients(self) -> int:
        return self.keys.quotas.max_clients

    @property
    def clients(self) -> list[str]:
        return self.keys.clients()

    def register(self, message: bytes, owner: str = ANONYMOUS) -> str:
        """Store a client's evaluation keys; returns its id (the keys' checksum)."""
        envelope = open_envelope(
            message, kind="evaluation-keys", circuit=self.circuit, source="evaluation keys"
        )
        return self._register(envelope, owner)

    def register_file(self, file: BinaryIO, size: int, owner: str = ANONYMOUS) -> str:
        """``register`` for an upload spooled to ``file``: its payload is read once."""
        envelope = open_envelope_file(
            file, size, kind="evaluation-keys", circuit=self.circuit, source="evaluation keys"
        )
        return self._register(envelope, owner)

    def _register(self, envelope: Envelope, owner: str) -> str:
        if checksum(envelope.payload) != envelope.key:
            raise MismatchError("the evaluation keys do not match the key id they carry")
        try:
            keys = self.fhe.EvaluationKeys.deserialize(envelope.payload)
        except Exception as error:
            raise EnvelopeError(f"the evaluation keys are malformed ({error})") from None
        charge = max(self.key_set_bytes, len(envelope.payload))
        self.keys.add(owner, envelope.key, keys, charge)  # evicts only this owner's own
        return envelope.key

    def has_client(self, client: str, owner: str = ANONYMOUS) -> bool:
        return self.keys.has(owner, client)

    def evaluate(self, client: str, message: bytes, owner: str = ANONYMOUS) -> bytes:
        """The encrypted logits of one encrypted image from ``client``."""
        keys = self.keys.get(owner, client)
        if keys is None:
            raise UnknownClientError(
                f"unknown client {client[:12]}: upload evaluation keys first (POST /keys)"
            )
        envelope = open_envelope(
            message, kind="input", circuit=self.circuit, key=client, source="encrypted input"
        )
        try:
            value = self.fhe.Value.deserialize(envelope.payload)
        except Exception as error:
            raise EnvelopeError(f"the encrypted input is malformed ({error})") from None
        with self._lock:  # one evaluation at a time: each already uses every core
            try:
                result = self._server.run(value, evaluation_keys=keys)
            except Exception as error:
                raise EnvelopeError(
                    f"the encrypted input does not fit this circuit ({error})"
                ) from None
        return seal("output", self.circuit, client, result.serialize())
