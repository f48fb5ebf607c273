"""The FHE service end to end over loopback: upload keys once, classify encrypted images, and
bad requests answered with a clear 4xx while the server keeps serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("concrete.fhe", reason="concrete-python not installed (the fhe extra)")
pytest.importorskip("fastapi", reason="fastapi not installed (the fhe extra)")
pytest.importorskip("uvicorn", reason="uvicorn not installed (the fhe extra)")
pytest.importorskip("httpx", reason="httpx not installed (the fhe extra)")

import httpx

from robustlab.crypto import CryptoError, quantize
from robustlab.crypto.artifact import compile_artifact
from robustlab.crypto.protocol import FheClient, FheServer
from robustlab.crypto.remote import RemoteService
from robustlab.crypto.service import BackgroundService, Limits, create_app
from tests.test_crypto import digits, digits_mlp
from tests.test_crypto_fhe import SMALL


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> tuple[str, FheServer]:
    train, _ = digits()
    network = quantize(digits_mlp(8), train.images, SMALL)
    artifact: Path = tmp_path_factory.mktemp("served")
    compile_artifact(artifact, network, network.quantize_inputs(train.images[:20]))
    server = FheServer(artifact, max_clients=2)
    background = BackgroundService(
        create_app(server, Limits(max_key_bytes=1 << 30, max_input_bytes=1 << 20))
    )
    url = background.start()
    yield url, server
    background.stop()


def test_classify_over_loopback(service: tuple[str, FheServer]) -> None:
    url, _ = service
    _, test = digits()
    remote = RemoteService(url)
    client = FheClient(remote.bundle())
    client.keygen(seed=7)
    client_id = remote.upload_keys(client.evaluation_keys())
    network = quantize(digits_mlp(8), digits()[0].images, SMALL)
    for index in range(2):
        image = test.images[index]
        logits = client.decrypt(remote.classify(client_id, client.encrypt(image.numpy())))
        assert np.array_equal(logits, network.logits(image[None])[0])
    remote.close()


def test_bad_requests_get_clear_4xx_and_the_server_keeps_running(
    service: tuple[str, FheServer],
) -> None:
    url, _ = service
    _, test = digits()
    raw = httpx.Client(base_url=url, timeout=120)
    client = FheClient(RemoteService(url).bundle())
    client.keygen(seed=8)
    client_id = raw.post("/keys", content=client.evaluation_keys()).json()["client"]

    unknown = raw.post("/clients/nobody/classify", content=b"x")
    assert unknown.status_code == 404 and "upload evaluation keys first" in unknown.json()["detail"]
    malformed = raw.post(f"/clients/{client_id}/classify", content=b"not a ciphertext")
    assert (
        malformed.status_code == 400 and "not a robustlab FHE message" in malformed.json()["detail"]
    )
    oversize = raw.post(f"/clients/{client_id}/classify", content=b"0" * ((1 << 20) + 1))
    assert oversize.status_code == 413 and "exceeds the limit" in oversize.json()["detail"]
    bad_keys = raw.post("/keys", content=b"RLFHE\x01\x00\x00\x00\x05{bad}")
    assert bad_keys.status_code == 400 and "damaged header" in bad_keys.json()["detail"]
    other = FheClient(RemoteService(url).bundle())
    other.keygen(seed=9)
    wrong_key = raw.post(
        f"/clients/{client_id}/classify", content=other.encrypt(test.images[0].numpy())
    )
    assert wrong_key.status_code == 409 and "key set" in wrong_key.json()["detail"]

    assert raw.get("/health").json()["status"] == "ok"  # still serving
    answer = raw.post(
        f"/clients/{client_id}/classify", content=client.encrypt(test.images[1].numpy())
    )
    assert answer.status_code == 200 and client.decrypt(answer.content).shape == (10,)
    with pytest.raises(CryptoError, match=r"refused .*\(404\)"):
        RemoteService(url).classify("nobody", b"x")
    raw.close()
