"""A compiled artifact on disk: everything a server needs, and what a client may see.

``ARTIFACT/manifest.json``  circuit id, shapes, input quantisation, statistics, accuracies
``ARTIFACT/network.npz``    the integer network (plain reference; the server's model)
``ARTIFACT/server.zip``     concrete-python's compiled server (no keys)
``ARTIFACT/client.json``    concrete-python's client specs: all a client needs to make keys

The circuit id is the checksum of the client specs, so keys and ciphertexts made from one
artifact's specs are refused by a server holding another.

``server.zip`` holds a shared library (and a jsonpickle configuration) that concrete loads and
runs, so the manifest records the sha256 of every file at compile time (``files``), and
``load_server`` checks a private copy against it before concrete opens anything. The
manifest's own digest (``artifact_digest``, printed by ``fhe compile``) can be pinned with
``fhe serve --artifact-digest``: without it, whoever can rewrite the files can rewrite the
manifest too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.crypto.backend import (
    ROUNDINGS,
    CompileOptions,
    Rounding,
    compile_network,
    require_concrete,
)
from robustlab.crypto.envelope import checksum
from robustlab.crypto.errors import ArtifactError
from robustlab.crypto.network import IntegerNetwork
from robustlab.crypto.rounding import IntArray
from robustlab.io import atomic_write_bytes, atomic_write_json
from robustlab.provenance import provenance

FORMAT = "robustlab-fhe-artifact/2"
"""/2: the manifest records each file's sha256 (``files``)."""
CLIENT_FIELDS = (
    "format",
    "circuit",
    "input_shape",
    "input_levels",
    "classes",
    "output_scale",
    "dataset",
)
"""The manifest fields a client is given (no weights, no statistics about the model)."""


@dataclass(frozen=True)
class ArtifactPaths:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def network(self) -> Path:
        return self.root / "network.npz"

    @property
    def server(self) -> Path:
        return self.root / "server.zip"

    @property
    def client(self) -> Path:
        return self.root / "client.json"

    @property
    def files(self) -> tuple[Path, ...]:
        """The files whose checksums the manifest records."""
        return (self.server, self.client, self.network)


def circuit_statistics(circuit: Any) -> dict[str, Any]:
    """Sizes and counts from concrete's compiler: the cost model behind the timings."""
    stats = circuit.statistics
    return {
        "programmable_bootstraps": int(stats.get("programmable_bootstrap_count", 0)),
        "key_switches": int(stats.get("key_switch_count", 0)),
        "bootstrap_key_bytes": int(stats.get("size_of_bootstrap_keys", 0)),
        "keyswitch_key_bytes": int(stats.get("size_of_keyswitch_keys", 0)),
        "secret_key_bytes": int(stats.get("size_of_secret_keys", 0)),
        "input_bytes": int(stats.get("size_of_inputs", 0)),
        "output_bytes": int(stats.get("size_of_outputs", 0)),
        "complexity": float(circuit.complexity),
        "global_p_error": float(circuit.global_p_error),
    }


def write_artifact(
    directory: str | Path,
    network: IntegerNetwork,
    circuit: Any,
    extra: dict[str, Any] | None = None,
    rounding: Rounding = "exact",
) -> dict[str, Any]:
    """Save a compiled ``circuit`` of ``network`` into ``directory``; returns the manifest.

    ``rounding`` is recorded because it decides what a run may expect: the plain network's
    exact logits, or only (mostly) its answers.
    """
    fhe = require_concrete()
    paths = ArtifactPaths(Path(directory))
    paths.root.mkdir(parents=True, exist_ok=True)
    specs = circuit.client.specs.serialize()
    fd, temporary = tempfile.mkstemp(prefix=".server.", suffix=".zip", dir=paths.root)
    os.close(fd)
    try:
        circuit.server.save(temporary)
        os.replace(temporary, paths.server)
    finally:
        Path(temporary).unlink(missing_ok=True)
    atomic_write_bytes(paths.client, specs)
    network.save(paths.network)
    manifest = {
        "format": FORMAT,
        "circuit": checksum(specs),
        "network": network.fingerprint(),
        "input_shape": list(network.input_shape),
        "input_levels": network.input_levels,
        "classes": network.classes,
        "output_scale": network.output_scale,
        "summary": network.summary(),
        "network_meta": network.meta,
        "statistics": circuit_statistics(circuit),
        "rounding": rounding,
        "concrete_python": str(getattr(fhe, "__version__", "unknown")),
        "provenance": provenance(),
        **(extra or {}),
        "files": {path.name: checksum(path.read_bytes()) for path in paths.files},
    }
    atomic_write_json(paths.manifest, manifest)
    return manifest


def compile_artifact(
    directory: str | Path,
    network: IntegerNetwork,
    inputset: IntArray,
    options: CompileOptions | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compile ``network`` and save it as an artifact; returns the manifest."""
    options = options or CompileOptions()
    circuit = compile_network(network, inputset, options)
    return write_artifact(directory, network, circuit, extra, options.rounding)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    paths = ArtifactPaths(Path(directory))
    if not paths.manifest.is_file():
        raise ArtifactError(
            f"{paths.root} is not an FHE artifact: {paths.manifest.name} is missing; make one "
            "with `robustlab fhe compile RUN_DIR --out DIR`"
        )
    try:
        manifest: dict[str, Any] = json.loads(paths.manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{paths.manifest} is unreadable ({error}); recompile") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(
            f"{paths.manifest} has format {manifest.get('format')!r}, expected {FORMAT!r}; "
            "recompile it with this version of robustlab"
        )
    for path in paths.files:
        if not path.is_file():
            raise ArtifactError(f"artifact {paths.root} is incomplete: {path.name} is missing")
    return manifest


def artifact_digest(directory: str | Path) -> str:
    """The sha256 of the manifest, which records every other file's: the artifact's id."""
    return checksum(ArtifactPaths(Path(directory)).manifest.read_bytes())


def read_verified(path: Path, manifest: dict[str, Any]) -> bytes:
    """The bytes of artifact file ``path``, checked against the manifest's sha256 for it."""
    files = manifest.get("files")
    expected = files.get(path.name) if isinstance(files, dict) else None
    if not isinstance(expected, str):
        raise ArtifactError(
            f"{path.parent / 'manifest.json'} records no checksum for {path.name}; recompile "
            "the artifact with `robustlab fhe compile`"
        )
    data = path.read_bytes()
    found = checksum(data)
    if found != expected:
        raise ArtifactError(
            f"{path}: sha256 {found[:16]}… does not match the manifest's {expected[:16]}…: the "
            "file was modified after compiling, or damaged; do not load it: recompile the artifact"
        )
    return data


def verify_artifact(
    directory: str | Path, manifest: dict[str, Any], expected_digest: str | None = None
) -> None:
    """Every file matches the manifest, and the manifest ``expected_digest`` when given."""
    paths = ArtifactPaths(Path(directory))
    if expected_digest is not None:
        found = artifact_digest(directory)
        if found != expected_digest.strip().lower():
            raise ArtifactError(
                f"{paths.manifest}: sha256 {found} is not the expected artifact digest "
                f"{expected_digest}; the artifact is not the one compiled (or was changed)"
            )
    for path in paths.files:
        read_verified(path, manifest)


def load_server(directory: str | Path, manifest: dict[str, Any]) -> Any:
    """concrete's compiled server, loaded from a private copy of ``server.zip`` checked
    against the manifest: a file swapped after the check is never the one loaded."""
    fhe = require_concrete()
    paths = ArtifactPaths(Path(directory))
    data = read_verified(paths.server, manifest)
    private = Path(tempfile.mkdtemp(prefix="robustlab-server-"))  # 0700: ours alone
    try:
        copy = private / paths.server.name
        copy.write_bytes(data)
        return fhe.Server.load(copy)  # unpacks into a directory of its own
    except Exception as error:
        raise ArtifactError(f"{paths.server} cannot be loaded ({error}); recompile") from None
    finally:
        shutil.rmtree(private, ignore_errors=True)


def manifest_rounding(manifest: dict[str, Any]) -> Rounding:
    """The artifact's rounding; artifacts from before the choice existed are exact."""
    rounding = manifest.get("rounding", "exact")
    if rounding not in ROUNDINGS:
        raise ArtifactError(
            f"manifest field 'rounding' is {rounding!r}, expected one of {ROUNDINGS}; recompile"
        )
    return rounding  # type: ignore[no-any-return]


def read_client_specs(directory: str | Path, manifest: dict[str, Any]) -> bytes:
    """The client specs, checked against the circuit id in the manifest."""
    specs = ArtifactPaths(Path(directory)).client.read_bytes()
    if checksum(specs) != manifest["circuit"]:
        raise ArtifactError(
            f"{directory}: client.json does not match the manifest's circuit id; the artifact "
            "was modified after compiling: recompile it"
        )
    return specs


def client_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a manifest a client receives."""
    return {name: manifest[name] for name in CLIENT_FIELDS if name in manifest}


def input_array(shape: list[int], images: IntArray) -> IntArray:
    """``images`` reshaped to (1, C, H, W), the circuit's input."""
    return np.asarray(images, dtype=np.int64).reshape((1, *shape))
