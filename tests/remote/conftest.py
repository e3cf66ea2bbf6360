"""An S3 server for the remote tests: moto's, in this process, on 127.0.0.1."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kache import settings as settings_mod
from kache.remote.s3 import Remote
from kache.store.store import Store
from tests.remote.helpers import ACCESS_KEY, SECRET_KEY

_buckets = itertools.count()


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a free port), in this process: its endpoint."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def second_moto() -> Iterator[str]:
    """Another S3 server (another endpoint, its own buckets)."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    """A new, empty bucket on the moto server."""
    import boto3

    name = f"kache-test-{next(_buckets)}"
    client = boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                                   region_name="us-east-1").client("s3", endpoint_url=moto_endpoint)
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_vars(bucket: str, moto_endpoint: str) -> dict[str, str]:
    """KACHE_S3_* variables naming the test bucket (not set anywhere)."""
    return {"KACHE_S3_BUCKET": bucket, "KACHE_S3_ENDPOINT": moto_endpoint,
            "KACHE_S3_ACCESS_KEY": ACCESS_KEY, "KACHE_S3_SECRET_KEY": SECRET_KEY}


@pytest.fixture
def s3_env(s3_vars: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The KACHE_S3_* variables of :func:`s3_vars`, set in os.environ."""
    env = dict(s3_vars)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def remote(s3_env: dict[str, str]) -> Iterator[Remote]:
    r = Remote.from_settings(settings_mod.load())
    assert r is not None
    yield r
    r.close()


@pytest.fixture
def store_a(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "machine-a" / "cache"))
    s.db  # noqa: B018
    yield s
    s.close()


@pytest.fixture
def store_b(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "machine-b" / "cache"))
    s.db  # noqa: B018
    yield s
    s.close()
