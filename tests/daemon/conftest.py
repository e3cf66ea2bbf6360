"""Daemons for the tests: in this process (a thread, a fake remote) or as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kache import settings as settings_mod
from kache.daemon.options import DaemonOptions, stand_in
from kache.daemon.server import Daemon
from tests.daemon.helpers import REAL_REMOTES, FakeRemote, Running


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def make_settings(store_root: Path) -> Callable[..., settings_mod.Settings]:
    def make(**env: str) -> settings_mod.Settings:
        full = {**os.environ, "KACHE_CACHE_DIR": str(store_root), **env}
        return settings_mod.load(full)

    return make


@pytest.fixture
def fake_remote() -> Iterator[FakeRemote]:
    remote = FakeRemote()
    yield remote
    remote.closed.set()


@pytest.fixture
def start_daemon(make_settings: Callable[..., settings_mod.Settings],
                 fake_remote: FakeRemote) -> Iterator[Callable[..., Running]]:
    """Start an in-process daemon (fake remote unless ``remote=`` says otherwise)."""
    started: list[Running] = []

    def start(env: dict[str, str] | None = None, *, remote: Any = fake_remote, service: bool = False,
              **kw: Any) -> Running:
        """``remote``: the stand-in for every remote (``REAL_REMOTES``: real ones); ``kw``:
        :class:`DaemonOptions` fields."""
        if remote is not REAL_REMOTES:
            kw.setdefault("remote_factory", stand_in(remote))
        kw.setdefault("handle_signals", False)
        kw.setdefault("accept_timeout", 0.05)
        daemon = Daemon(make_settings(**(env or {})), DaemonOptions(**kw), service=service)
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                result["code"] = daemon.serve()
            except BaseException as e:  # noqa: BLE001 - reported to the test
                result["error"] = e

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while not daemon.ready.is_set() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        running = Running(daemon, thread, result)
        started.append(running)
        return running

    yield start
    for r in started:
        if r.thread.is_alive():
            r.stop()


@pytest.fixture
def kache_process(store_root: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``python -m kache daemon run`` as a real process (killed at the end if still alive)."""
    procs: list[subprocess.Popen[str]] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        full = {**os.environ, "KACHE_CACHE_DIR": str(store_root), "KACHE_DAEMON_IDLE_TIMEOUT": "30", **(env or {})}
        proc = subprocess.Popen([sys.executable, "-m", "kache", "daemon", "run", *args], env=full,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()
