"""Fixtures shared by the whole suite (helpers live in tests/support/): every test runs with
a clean environment and private XDG dirs; the fixture workspace built through kache; daemons
in this process or as real processes. Tests that run cargo are marked ``e2e`` here (see
tests/support/e2e.py)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kache import settings as settings_mod
from kache.daemon.options import DaemonOptions, stand_in
from kache.daemon.server import Daemon
from tests.support import e2e
from tests.support.daemon import REAL_REMOTES, FakeRemote, Running, start_in_thread
from tests.support.env import CLEARED_PREFIXES, kache_executable, rustup_home
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, moto_server, s3_client
from tests.support.workspace import Workspace, daemon_running, make_machine, make_workspace

_SESSION_UMASK = os.umask(0o022)
os.umask(_SESSION_UMASK)


@pytest.fixture(autouse=True)
def session_umask() -> Iterator[None]:
    """Every test starts under the umask the session started with (022 unless the caller
    chose another). Daemons run in threads of this process, and kache code that changes
    the umask for a moment (to make owner-only directories) can, when two threads do it
    at once, leave the whole process at 077: every later cargo build would inherit it."""
    os.umask(_SESSION_UMASK)
    yield
    os.umask(_SESSION_UMASK)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Clear KACHE_*, wrapper, CARGO_*, AWS_* and XDG_* variables; give HOME, XDG dirs and
    CARGO_HOME in tmp, so no test can touch the real ~/.cargo/config.toml.

    RUSTUP_HOME keeps pointing at the real toolchains so cargo and rustc work offline.
    """
    rustup = rustup_home()
    for name in list(os.environ):
        if name.startswith(CLEARED_PREFIXES):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    if os.path.isdir(rustup):
        monkeypatch.setenv("RUSTUP_HOME", rustup)
    (home / ".cargo").mkdir()
    monkeypatch.setenv("CARGO_HOME", str(home / ".cargo"))
    yield home


@pytest.fixture
def user_config(clean_env: Path) -> Path:
    """Path of the user's config.toml (its directory exists; the file does not)."""
    path = clean_env / ".config" / "kache" / "config.toml"
    path.parent.mkdir(parents=True)
    return path


@pytest.fixture
def store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KACHE_CACHE_DIR set to tmp/store (not created): the store every kache command uses."""
    root = tmp_path / "store"
    monkeypatch.setenv("KACHE_CACHE_DIR", str(root))
    return root


@pytest.fixture
def kache_exe() -> str:
    """The installed ``kache`` console script of the interpreter running the tests."""
    return kache_executable()


_guard = e2e.Guard()


def pytest_configure(config: pytest.Config) -> None:
    """Watch the processes tests start (see tests/support/e2e.py)."""
    _guard.install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``e2e`` the tests in tests/e2e/ and those using a fixture that runs cargo."""
    e2e.mark(items)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("e2e") is None:
        _guard.watch(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """A test without the ``e2e`` marker that ran cargo (or a rustc build through kache)
    fails here, naming the command."""
    result = yield
    _guard.verdict()
    return result


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reliability summary (issue 9): what the fault, concurrency and hostile-input
    tests of this run did, counted as they did it (see tests/support/reliability.py)."""
    from tests.support import reliability

    if not reliability.enabled():
        return
    terminalreporter.section("kache reliability")
    terminalreporter.write_line(reliability.summary())
    path = reliability.env_path()
    if path:
        reliability.write_json(path)


# --------------------------------------------------------------------------- the fixture workspace


@pytest.fixture
@e2e.runs_cargo
def workspace(tmp_path: Path, kache_exe: str) -> Workspace:
    """A copy of tests/fixtures/ws at tmp/checkout-a/ws, built through kache into tmp/store."""
    return make_workspace(tmp_path, kache_exe, at="checkout-a/ws")


@pytest.fixture
@e2e.runs_cargo
def machines(tmp_path: Path, kache_exe: str) -> Callable[[str], Workspace]:
    """``machines("a")``: a new machine (see :func:`make_machine`) under ``tmp_path/a``."""
    return lambda name: make_machine(tmp_path / name, kache_exe)


@pytest.fixture
def daemon_ws(workspace: Workspace) -> Iterator[Workspace]:
    """The fixture workspace, built once (a filled store), with a daemon running on it."""
    with daemon_running(workspace) as ws:
        yield ws


# --------------------------------------------------------------------------- daemons


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
        running = start_in_thread(Daemon(make_settings(**(env or {})), DaemonOptions(**kw), service=service))
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


# --------------------------------------------------------------------------- S3 (moto, in this process)

_buckets = itertools.count()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the session; its endpoint URL."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    """A new, empty bucket on the moto server."""
    name = f"kache-test-{next(_buckets)}"
    s3_client(moto_endpoint).create_bucket(Bucket=name)
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
