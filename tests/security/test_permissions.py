"""Owner-only by default: what kache writes is for the user who runs it, whatever the umask.

Every kache process here runs under ``umask 022`` (the usual default, which leaves new
files readable by everyone), so nothing passes because the test runner happened to have
a strict umask. After real cargo builds through kache and a daemon start, the store root
and every directory under it are 0700, every file in it (index and its WAL, events, the
daemon's log, pid file and socket, upload intents, locks, stamps) is 0600 or stricter,
and read-only blobs (0444 or 0555, hardlinked into target dirs) sit under 0700 directories only.

Then a second local user (``nobody``; the tests run as root) tries what such a user
would: list the store, read the index and a blob, plant an upload intent, connect to the
daemon's socket. The store lives in a directory that user can traverse, next to a file
and a socket it *can* use (the controls), so the only barrier is kache's own modes.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import reliability
from tests.support.daemon import pending_intents
from tests.support.env import CLEARED_PREFIXES, FIXTURES, kache_log
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.security, pytest.mark.e2e]

SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter lives under /root, out of nobody's reach


# ---------------------------------------------------------------------- helpers


def _kache() -> str:
    exe = Path(sys.executable).with_name("kache")
    return str(exe) if exe.exists() else shutil.which("kache") or "kache"


def base_env(home: Path) -> dict[str, str]:
    """os.environ without kache's, cargo's, AWS and XDG variables, with a private HOME."""
    rustup_home = os.environ.get("RUSTUP_HOME") or os.path.expanduser("~/.rustup")
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_PREFIXES)}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               CARGO_HOME=str(home / ".cargo"), RUSTUP_HOME=rustup_home)
    (home / ".cargo").mkdir(parents=True, exist_ok=True)
    return env


def under_umask_022(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` with umask 022 (and so every kache process it starts, daemon included)."""
    return subprocess.run(["sh", "-c", 'umask 022 && exec "$@"', "sh", *cmd], capture_output=True, text=True,
                          **kwargs)  # type: ignore[call-overload]


def cargo_build(path: Path, env: dict[str, str]) -> None:
    """``cargo build`` through kache under umask 022; counted in the reliability summary."""
    out = under_umask_022(["cargo", "build", "--offline"], cwd=path, env=env, timeout=300)
    reliability.count("builds run")
    if out.returncode != 0:
        reliability.count("builds failed")
        raise AssertionError(f"cargo build failed:\n{out.stderr}")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def violations(root: Path) -> list[str]:
    """Everything under ``root`` (itself included) that another user could use: a
    directory with any group/other bit, a file or socket with any group/other bit, or a
    blob (``store/<xx>/<hash>``) whose mode is not 0644 (0755 for executables): blobs are
    hardlinked into target dirs, so they are private by their directories."""
    bad = []
    if mode(root) & 0o077:
        bad.append(f"{oct(mode(root))} {root}")
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in dirnames:
            if mode(here / name) & 0o077:
                bad.append(f"{oct(mode(here / name))} {here / name}/")
        for name in filenames:
            path = here / name
            rel = path.relative_to(root).parts
            is_blob = len(rel) == 3 and rel[0] == "store" and len(rel[2]) == 64
            if (mode(path) not in (0o644, 0o755)) if is_blob else (mode(path) & 0o077):
                bad.append(f"{oct(mode(path))} {path}")
    return bad


def assert_private(root: Path) -> None:
    bad = violations(root)
    assert not bad, "reachable by other users:\n" + "\n".join(bad)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------- the shared store


@dataclass
class Built:
    """A store filled by a real build under umask 022, with its daemon running."""

    base: Path
    store: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    """The fixture workspace built through kache (umask 022) with a remote configured
    whose endpoint refuses connections: every new entry leaves an upload intent that
    stays, and the build starts the daemon. The base directory is 0755 (like a home
    directory), so another user's access is decided by kache's modes alone."""
    base = Path(tempfile.mkdtemp(prefix="kache-perm-", dir="/tmp"))
    base.chmod(0o755)
    home = base / "home"
    env = base_env(home)
    store = base / "cache"
    config = home / ".config" / "kache" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[cache.remote]\nbucket = "perm-test"\nendpoint = "http://127.0.0.1:{closed_port()}"\n')
    env.update(RUSTC_WRAPPER=_kache(), KACHE_CACHE_DIR=str(store), KACHE_REMOTE_CHECK_TIMEOUT_MS="0",
               KACHE_DAEMON_IDLE_TIMEOUT="120")
    ws = base / "ws"
    shutil.copytree(FIXTURES / "ws", ws)
    try:
        cargo_build(ws, env)
        out = under_umask_022([_kache(), "daemon", "start", "--wait"], env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: (store / "daemon.sock").exists(), 30, "the daemon's socket", interval=0.05)
        yield Built(base, store, env)
    finally:
        subprocess.run([_kache(), "daemon", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def held_open(built: Built) -> Iterator[None]:
    """A kache process (umask 022) holding the index open, so index.db-wal and -shm exist."""
    code = ("import sys\nfrom kache.store.store import Store\ns = Store(sys.argv[1])\n"
            "s.db.execute('SELECT COUNT(*) FROM entries').fetchone()\nprint('open', flush=True)\nsys.stdin.read()\n")
    proc = subprocess.Popen(["sh", "-c", 'umask 022 && exec "$@"', "sh", sys.executable, "-c", code,
                             str(built.store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=built.env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


# ---------------------------------------------------------------------- modes


def test_a_store_built_under_umask_022_is_owner_only(built: Built, held_open: None) -> None:
    """Root and every directory 0700; index, WAL, events, log, pid, socket, intents,
    locks and stamps 0600 or stricter; read-only blobs under 0700 directories only."""
    store = built.store
    for name in ("index.db", "index.db-wal", "index.db-shm", "events.jsonl", "daemon.log", "daemon.pid"):
        assert (store / name).is_file(), f"{name} was not created: nothing to check"
    sock = store / "daemon.sock"
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    intents = pending_intents(store)
    blobs = [p for p in (store / "store").glob("*/*") if p.is_file()]
    assert intents and blobs, (intents, blobs)
    assert mode(store) == 0o700
    assert mode(sock) & 0o177 == 0, oct(mode(sock))
    assert_private(store)


def test_the_default_store_is_created_owner_only(tmp_path: Path, kache_exe: str) -> None:
    """With no KACHE_CACHE_DIR, kache creates ``$XDG_CACHE_HOME/kache`` (and the cache
    dir itself, 0700 as the XDG spec asks) owner-only, whatever the umask."""
    home = Path(os.environ["HOME"])
    cache_home = home / ".cache"
    assert not cache_home.exists()
    env = base_env(home)
    env["RUSTC_WRAPPER"] = kache_exe
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "ws", ws)
    cargo_build(ws, env)
    store = cache_home / "kache"
    assert (store / "index.db").is_file() and any((store / "store").iterdir())
    assert mode(cache_home) == 0o700
    assert_private(store)


def test_a_store_first_made_by_a_pass_through_call_is_owner_only(tmp_path: Path, kache_exe: str) -> None:
    """A binary crate is compiled plainly, but its event still creates the configured
    store; that first creation is owner-only too."""
    env = base_env(Path(os.environ["HOME"]))
    store = tmp_path / "cache"
    env.update(RUSTC_WRAPPER=kache_exe, KACHE_CACHE_DIR=str(store))
    hello = tmp_path / "hello"
    shutil.copytree(FIXTURES / "hello", hello)
    cargo_build(hello, env)
    assert (store / "events.jsonl").is_file()
    assert_private(store)


def test_a_warning_before_any_store_leaves_the_default_dir_owner_only(tmp_path: Path, kache_exe: str) -> None:
    """An invalid config makes the wrapper warn (once, remembered in the default cache
    dir) before any store exists; the directories that memory creates are owner-only,
    so the default store later created there is too."""
    home = Path(os.environ["HOME"])
    env = base_env(home)
    env["RUSTC_WRAPPER"] = kache_exe
    config = home / ".config" / "kache" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[cache]\nlocal_max_size = "a lot"\n')
    hello = tmp_path / "hello"
    shutil.copytree(FIXTURES / "hello", hello)
    out = under_umask_022(["cargo", "build", "--offline"], cwd=hello, env=env, timeout=300)
    reliability.count("builds run")
    if out.returncode != 0:
        reliability.count("builds failed")
    assert out.returncode == 0, out.stderr
    store = home / ".cache" / "kache"
    assert "invalid setting in ~/.config/kache/config.toml: cache.local_max_size" in kache_log(store)
    assert (store / "tmp" / "warned").is_dir()
    assert (store / "kache.log").stat().st_mode & 0o077 == 0
    assert_private(store)


# ---------------------------------------------------------------------- a second user

_PROBE = r"""
import errno, json, os, socket, sys
results = []
for op, path in json.loads(sys.argv[1]):
    try:
        if op == "list":
            os.listdir(path)
        elif op == "read":
            with open(path, "rb") as f:
                f.read(1)
        elif op == "create":
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        elif op == "connect":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
            s.close()
        results.append([op, path, "ok"])
    except OSError as e:
        results.append([op, path, errno.errorcode.get(e.errno, str(e.errno))])
print(json.dumps(results))
"""


def as_nobody(ops: list[tuple[str, Path]]) -> dict[tuple[str, str], str]:
    """Run the operations as the ``nobody`` user; (op, path) → "ok" or the errno name."""
    user = pwd.getpwnam("nobody")
    out = subprocess.run([SYSTEM_PYTHON, "-I", "-c", _PROBE, json.dumps([[op, str(p)] for op, p in ops])],
                         user=user.pw_uid, group=user.pw_gid, extra_groups=[], env={"PATH": "/usr/bin:/bin"},
                         cwd="/", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {(op, path): result for op, path, result in json.loads(out.stdout)}


def _require_root_and_nobody() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to run a process as the second user `nobody`")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this machine has no `nobody` user to act as a second user")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} (an interpreter `nobody` can run) is missing")


@pytest.fixture
def controls(built: Built) -> Iterator[tuple[Path, Path]]:
    """A world-readable file and a world-writable listening socket next to the store:
    what the second user *can* reach there (so a denial below is kache's doing)."""
    probe = built.base / "probe.txt"
    probe.write_text("readable\n")
    probe.chmod(0o644)
    path = built.base / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    path.chmod(0o666)
    server.listen(4)
    try:
        yield probe, path
    finally:
        server.close()
        path.unlink()
        probe.unlink()


def test_a_second_user_can_reach_nothing_in_the_store(built: Built, controls: tuple[Path, Path]) -> None:
    """``nobody`` can read a file and connect to a socket beside the store, but can
    neither list nor read the store, its index or a blob, nor plant an upload intent,
    nor connect to the daemon (EACCES)."""
    _require_root_and_nobody()
    probe, control_sock = controls
    store = built.store
    blob = next(p for p in (store / "store").glob("*/*") if p.is_file())
    intent = pending_intents(store)[0]
    denied = [("list", store), ("list", store / "store"), ("list", blob.parent), ("read", store / "index.db"),
              ("read", blob), ("read", store / "events.jsonl"), ("read", store / "daemon.log"),
              ("read", intent), ("create", store / "uploads" / f"{'0' * 64}.evil"),
              ("create", store / "tmp" / "planted"), ("connect", store / "daemon.sock")]
    got = as_nobody([("read", probe), ("connect", control_sock), *denied])
    assert got[("read", str(probe))] == "ok"
    assert got[("connect", str(control_sock))] == "ok"
    assert {f"{op} {path}": got[(op, str(path))] for op, path in denied} == {
        f"{op} {path}": "EACCES" for op, path in denied}
    assert not (store / "uploads" / f"{'0' * 64}.evil").exists()


def test_files_stay_private_even_in_directories_opened_to_others(built: Built) -> None:
    """Defence in depth: with every store directory made 0755 by hand, the index, the
    events, the log, the pid file, intents and locks are still unreadable to ``nobody``,
    and the daemon's socket (0600) still refuses its connection."""
    _require_root_and_nobody()
    store = built.store
    dirs = [store, *(p for p in store.rglob("*") if p.is_dir())]
    before = {d: mode(d) for d in dirs}
    private = [store / "index.db", store / "events.jsonl", store / "daemon.log", store / "daemon.pid",
               pending_intents(store)[0], *list((store / "locks").iterdir())[:1]]
    try:
        for d in dirs:
            d.chmod(0o755)
        got = as_nobody([("list", store), *(("read", p) for p in private), ("connect", store / "daemon.sock")])
    finally:
        for d, m in before.items():
            d.chmod(m)
    assert got[("list", str(store))] == "ok"  # the directories really were open
    assert {p: got[("read", str(p))] for p in map(str, private)} == {str(p): "EACCES" for p in private}
    assert got[("connect", str(store / "daemon.sock"))] == "EACCES"
