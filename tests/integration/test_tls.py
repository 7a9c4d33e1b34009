"""A rediss:// (TLS) broker with a password: the pipeline works, the password stays out of logs."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from shared.cli.stack import log_dir
from shared.core.embedded_redis import find_redis_server, free_port
from shared.core.settings import Settings
from tests.conftest import Processes
from tests.integration.helpers import image_bytes, records
from workers.tiny.images import tiny_images

PASSWORD = "tls-secret-4f9a"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server speaking only TLS, with a self-signed certificate made for this test."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.exceptions.RedisError:
            if process.poll() is not None:
                pytest.skip("this redis-server was built without TLS")
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.slow  # CI runs it after `make test`, which keeps to its 6 minutes
def test_a_tls_broker_with_a_password_works_and_the_password_stays_hidden(
    make_settings: Callable[..., Settings], tls_redis: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=tls_redis, threshold=-1000.0)
    assert settings.input_dir is not None
    for i, image in enumerate(tiny_images(3, seed=23)):
        (settings.input_dir / f"t{i}.png").write_bytes(image_bytes(image))
    run = procs.kcap("run", settings=settings)
    assert run.wait(timeout=180) == 0, procs.tail()
    found = records(settings)
    assert len(found["output"]) == 3
    # The console shows warnings only; the broker URL (masked) is logged in the log files.
    logs = procs.logs() + "".join(path.read_text() for path in sorted(log_dir(settings).glob("*.log")))
    assert "rediss://" in logs and PASSWORD not in logs
    for record in found["output"]:
        assert PASSWORD not in Path(str(record["_path"])).read_text()
