"""Fixtures of the fault-injection suite over real cargo builds (helpers:
tests/support/faults.py and tests/support/remote_faults.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.e2e import runs_cargo
from tests.support.faults import Faults, prepare_store, seed_store
from tests.support.remote_faults import DaemonProc, FaultProxy, started
from tests.support.s3 import moto_server
from tests.support.workspace import Workspace, make_workspace


@pytest.fixture(scope="session")
@runs_cargo
def prepared_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding every cacheable unit of the fixture (one cold build, then
    ``cargo clean``), its event log removed. Copy it with :func:`seed_store`; never
    write to it."""
    return prepare_store(tmp_path_factory.mktemp("faults-prepared"))


@pytest.fixture
@runs_cargo
def fault_ws(tmp_path: Path, kache_exe: str, request: pytest.FixtureRequest) -> Callable[..., Workspace]:
    """``fault_ws(warm=…, store=…)``: a workspace of this test; ``warm`` seeds its store
    (default ``tmp_path/store``) from ``prepared_store``. target/ is empty either way."""

    def make(*, warm: bool = False, store: Path | None = None) -> Workspace:
        ws = make_workspace(tmp_path, kache_exe, store)
        if warm:
            seed_store(request.getfixturevalue("prepared_store"), ws.store)
        return ws

    return make


@pytest.fixture
def faults(tmp_path: Path) -> Faults:
    return Faults(tmp_path / "faults.log")


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., bool]]:
    """``tmpfs(path, size="4m")`` mounts a tmpfs there (True) or says it cannot (False);
    ``tmpfs.remount(path, "ro")``. Everything mounted is unmounted at teardown."""
    mounted: list[Path] = []

    def mount(path: Path, size: str = "4m") -> bool:
        path.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            return False
        mounted.append(path)
        return True

    def remount(path: Path, mode: str) -> bool:
        return subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], capture_output=True,
                              check=False).returncode == 0

    mount.remount = remount  # type: ignore[attr-defined]
    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


# --------------------------------------------------------------------------- remote faults


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the module; its endpoint URL."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def proxy(s3: str) -> Iterator[FaultProxy]:
    p = FaultProxy(s3)
    yield p
    p.close()


@pytest.fixture
def daemons() -> Iterator[list[DaemonProc]]:
    """Every daemon a test started is stopped (SIGTERM, then SIGKILL) when it ends."""
    started.clear()
    yield started
    for d in list(started):
        d.stop()
    started.clear()
