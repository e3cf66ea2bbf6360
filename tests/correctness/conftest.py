"""Fixtures of the correctness tests: small workspaces built through kache, and the
three ways a hit can be served (helpers: tests/support/project.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.e2e import runs_cargo
from tests.support.project import NativeClient, Project, Serving, build_native_client, make_project


@pytest.fixture
@runs_cargo
def project(tmp_path: Path, kache_exe: str):  # type: ignore[no-untyped-def]
    """``project(names, **env)``: a workspace of these parts at tmp/checkout-a/ws, built
    through kache alone (no daemon) into tmp/store."""

    def make(names: Iterable[str], *, main: str | None = None, app_files: Mapping[str, str] | None = None,
             at: str = "checkout-a/ws", **env: str) -> Project:
        return make_project(tmp_path / at, tmp_path / "store", kache_exe, names, main=main,
                            app_files=app_files, **env)

    return make


@pytest.fixture(scope="session")
@runs_cargo
def native_client(tmp_path_factory: pytest.TempPathFactory) -> NativeClient:
    """The native client (``kache daemon client --output``), built once for the session,
    for the store ``<session tmp>/nstore`` (its socket path is compiled in: the tests
    that use it empty that store first)."""
    return build_native_client(tmp_path_factory.mktemp("native"))


@pytest.fixture
def serving(request: pytest.FixtureRequest, tmp_path: Path, kache_exe: str) -> Iterator[Serving]:
    """Parametrised indirectly with ``wrapper``, ``daemon`` or ``native``; the daemon
    (if any) is started, and stopped after the test."""
    mode = request.param
    if mode == "native":
        client: NativeClient = request.getfixturevalue("native_client")
        if client.store.exists():
            shutil.rmtree(client.store)
        s = Serving(mode, client.store, kache_exe, client.path)
    else:
        s = Serving(mode, tmp_path / "store", kache_exe)
    s.start()
    try:
        yield s
    finally:
        s.stop()
