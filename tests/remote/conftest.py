"""Fixtures of the remote tests: a second S3 server, a Remote, stores of two machines,
machines whose daemons stop with the test (the first S3 server: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kache import settings as settings_mod
from kache.remote.s3 import Remote
from kache.store.store import Store
from tests.support.s3 import moto_server
from tests.support.workspace import Workspace, kache


@pytest.fixture
def second_moto() -> Iterator[str]:
    """Another S3 server (another endpoint, its own buckets)."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def remote(s3_env: dict[str, str]) -> Iterator[Remote]:
    r = Remote.from_settings(settings_mod.load())
    assert r is not None
    yield r
    r.close()


@pytest.fixture
def store_a(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "machine-a" / "cache"))
    s.open()
    yield s
    s.close()


@pytest.fixture
def store_b(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "machine-b" / "cache"))
    s.open()
    yield s
    s.close()


@pytest.fixture
def started() -> Iterator[list[Workspace]]:
    """Machines whose daemons are stopped at the end of the test."""
    ws: list[Workspace] = []
    yield ws
    for w in ws:
        kache(w, "daemon", "stop")
