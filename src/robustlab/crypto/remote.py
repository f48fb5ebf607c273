"""The client side of the service: fetch the bundle, upload evaluation keys, classify.

Wraps httpx so a refused request becomes a ``CryptoError`` carrying the server's message
(``AccessError`` for a refused token, ``CapacityError`` for a full server). The bearer token
is sent with every request; over anything but loopback, use an ``https://`` URL (with
``ca_file`` for a private certificate authority) so the token and keys cross encrypted.
"""

from __future__ import annotations

import base64
import importlib
import ssl
from pathlib import Path
from typing import Any

from robustlab.crypto.errors import AccessError, CapacityError, CryptoError, MissingBackendError
from robustlab.crypto.protocol import ClientBundle

TIMEOUT_S = 600.0


class RemoteService:
    def __init__(
        self,
        url: str,
        timeout: float = TIMEOUT_S,
        token: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        try:
            httpx = importlib.import_module("httpx")
        except ImportError as error:
            raise MissingBackendError(
                f"httpx is not importable ({error}); install the fhe extra: "
                "pip install 'robustlab[fhe]'"
            ) from None
        self.url = url.rstrip("/")
        self._httpx = httpx
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers=headers,
            verify=ssl.create_default_context(cafile=str(ca_file)) if ca_file else True,
        )

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except self._httpx.HTTPError as error:
            raise CryptoError(
                f"cannot reach the FHE service at {self.url} ({error}); start it with "
                "`robustlab fhe serve ARTIFACT`"
            ) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except (ValueError, AttributeError):
                detail = response.text
            message = f"the FHE service refused {path} ({response.status_code}): {detail}"
            if response.status_code == 401:
                raise AccessError(message)
            if response.status_code == 503:
                raise CapacityError(message)
            raise CryptoError(message)
        return response

    def bundle(self) -> ClientBundle:
        data = self._request("GET", "/client").json()
        return ClientBundle(base64.b64decode(data["specs"]), dict(data["manifest"]))

    def upload_keys(self, message: bytes) -> str:
        return str(self._request("POST", "/keys", content=message).json()["client"])

    def classify(self, client: str, message: bytes) -> bytes:
        content: bytes = self._request(
            "POST", f"/clients/{client}/classify", content=message
        ).content
        return content
