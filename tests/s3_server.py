"""S3 for tests: moto's ThreadedMotoServer on 127.0.0.1, the way s3fs's own tests run it.

One server per test module (`s3_server`), reset before each test, and a fresh bucket per test
(`s3_storage`). Tests reach it through s3fs exactly as kcap reaches AWS, MinIO or R2: an
endpoint URL and credentials, either as fsspec `storage_options` (in this process) or as the
usual AWS_* environment variables (for child processes, `S3Storage.env`).

Use from a test module:  `def test_x(s3_storage: S3Storage) -> None: ...` (the fixtures are
registered in tests/conftest.py).
"""

from __future__ import annotations

import secrets
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from shared.core.embedded_redis import free_port

REGION = "us-east-1"
# Moto accepts any credentials; these are never real ones.
KEY_ID = "kcap-test-key"
SECRET = "kcap-test-secret"


@dataclass(frozen=True)
class S3Storage:
    """One test's bucket on the module's moto server."""

    endpoint_url: str
    bucket: str

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for this store. Connections close after each request
        (`force_close`): moto's werkzeug server holds a thread per open connection, and a pooled
        keep-alive connection would otherwise outlive the test as a thread."""
        return {
            "key": KEY_ID,
            "secret": SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint_url},
            "config_kwargs": {"connector_args": {"force_close": True, "keepalive_timeout": None}},
        }

    @property
    def env(self) -> dict[str, str]:
        """The same store for a child process, through the standard AWS variables."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": REGION,
        }

    def url(self, *parts: str) -> str:
        """`s3://{bucket}/{parts...}`."""
        return "/".join([f"s3://{self.bucket}", *parts])

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)


def _post(url: str) -> None:
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free loopback port for the module; yields its endpoint URL."""
    pytest.importorskip("s3fs")
    from fsspec.asyn import get_loop
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # fsspec's event-loop thread and asyncio's executor thread (aiobotocore builds its TLS
    # context there) live for the whole process: start them here, outside any test, so the
    # leaked-thread check does not blame the first test that touches S3.
    get_loop()
    S3Storage(endpoint, "warm-up").filesystem().ls("")
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_storage(s3_server: str) -> Iterator[S3Storage]:
    """A clean moto (reset, as s3fs's tests do) and a fresh bucket for this test."""
    _post(f"{s3_server}/moto-api/reset")
    storage = S3Storage(endpoint_url=s3_server, bucket=f"kcap-test-{secrets.token_hex(4)}")
    # The filesystem object is cached across tests (building a client takes a good part of a
    # second); its listings from an earlier test describe a store that was reset since.
    filesystem = storage.filesystem()
    filesystem.invalidate_cache()
    filesystem.mkdir(storage.bucket)
    yield storage
