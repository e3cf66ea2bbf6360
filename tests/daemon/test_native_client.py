"""The native thin client (kache/native/client.rs), built with the real rustc, against a
stand-in daemon on a real Unix socket: what it sends, how it reads every kind of reply,
and that everything it does not serve ends in running kache with the same arguments
(or, when kache itself cannot run, the compiler)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kache.doctor import FAIL, OK, WARN, check_native_client
from kache.native import BuildError, build_client, client_info
from tests.support.daemon import serve_lines
from tests.support.e2e import runs_cargo
from tests.support.tty import STOPPED, run_in_pty, run_in_pty_background

HITS_VARIABLE = "KACHE_DAEMON_HITS"
FAKE_KACHE = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "hits": os.environ.get("{HITS_VARIABLE}")}}) + "\\n")
sys.stdout.write("kache ran\\n")
sys.exit(3)
"""


class Client:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "daemon.sock"
        self.kache = base / "kache"
        self.kache.write_text(FAKE_KACHE)
        self.kache.chmod(0o755)
        self.compiler = base / "rustc"
        self.compiler.write_text("#!/bin/sh\necho compiler ran \"$@\"\n")
        self.compiler.chmod(0o755)
        self.exe = base / "kache-client"
        self.log = base / "fallbacks.jsonl"
        build_client(str(self.exe), str(self.kache), str(self.socket))

    def run(self, *args: str | bytes, timeout: float = 20, **env: str | bytes) -> subprocess.CompletedProcess[bytes]:
        self.log.unlink(missing_ok=True)
        base = {"PATH": "/usr/bin:/bin", "FAKE_LOG": str(self.log), "HOME": str(self.base),
                "KACHE_CACHE_DIR": str(self.base)}
        return subprocess.run([str(self.exe), *args], env={**base, **env}, cwd=self.base, capture_output=True,
                              timeout=timeout)

    def fallbacks(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture(scope="module")
@runs_cargo  # builds the native client with rustc
def client(tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(tmp_path_factory.mktemp("native"))


class FakeDaemon:
    """Accepts connections on the client's socket, keeps each request line, answers
    ``reply`` (nothing at all when None) and closes."""

    def __init__(self, path: Path, reply: bytes | None) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.path = path
        self.thread = threading.Thread(target=serve_lines, args=(self.sock, self._answer), daemon=True)
        self.thread.start()

    def _answer(self, conn: socket.socket, data: bytes) -> None:
        self.requests.append(data)
        if self.reply is None:
            time.sleep(5)  # a daemon that never answers
        else:
            conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def daemon(client: Client) -> Iterator[Callable]:
    started: list[FakeDaemon] = []

    def start(reply: bytes | dict | None) -> FakeDaemon:
        if isinstance(reply, dict):
            reply = json.dumps(reply, separators=(",", ":")).encode() + b"\n"  # as the daemon writes them
        d = FakeDaemon(client.socket, reply)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


def test_the_request_carries_the_call_as_python_reads_it(client: Client, daemon: Callable) -> None:
    d = daemon({"ok": True, "hit": True, "stdout": "", "stderr": ""})
    args = [str(client.compiler).encode(), b"--crate-name", "café".encode(), b"\xff\xfe-not-utf8", b'q"uo\\te',
            b"tab\there\x01"]
    env = {"PATH": "/usr/bin:/bin", "FAKE_LOG": str(client.log), "ODD": b"\xe2\x82\xffend", "EMOJI": "😀",
           "QUOTE": 'say "hi"\n', "HOME": str(client.base), "KACHE_CACHE_DIR": str(client.base)}
    out = subprocess.run([str(client.exe), *args], env=env, cwd=client.base, capture_output=True, umask=0o027,
                         timeout=20)
    assert out.returncode == 0, out.stderr
    [line] = d.requests
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    request = json.loads(line)
    assert request["v"] == 1 and request["op"] == "hit" and request["store"] is None
    assert request["argv"] == [os.fsdecode(a) for a in args]  # undecodable bytes as surrogateescape reads them
    assert request["env"] == {k: os.fsdecode(v) for k, v in env.items()}
    assert request["cwd"] == str(client.base)
    assert request["umask"] == 0o027
    assert isinstance(request["client_ms"], float) and 0 <= request["client_ms"] < 1000
    assert client.fallbacks() == []


def test_a_hit_prints_rustcs_messages_byte_for_byte(client: Client, daemon: Callable) -> None:
    stdout = 'a"b\\c\n\u00e9 \U0001F600 \udcff tail'  # \udcff: a byte that was not UTF-8
    stderr = "warning: unused variable: `x`\n\x1b[0m\t\r\n"
    daemon({"ok": True, "hit": True, "stdout": stdout, "stderr": stderr, "extra": {"a": [1, 2.5e3, {"b": None}]}})
    out = client.run(str(client.compiler), "--crate-name", "x")
    assert out.returncode == 0, out.stderr
    assert out.stdout == stdout.encode("utf-8", "surrogateescape")
    assert out.stderr == stderr.encode()
    assert client.fallbacks() == []


@pytest.mark.parametrize("reply, told", [
    ({"ok": True, "hit": False}, True),
    ({"ok": True, "hit": False, "why": "invalid settings"}, True),
    ({"ok": True, "hit": False, "why": "another store"}, False),
    ({"ok": False, "error": "daemon busy: 64 connections open: try again"}, False),
    ({"ok": False, "error": "unknown op: \"hit\""}, False),
    ({"ok": True, "hit": True, "stdout": "\ud800", "stderr": ""}, False),  # not a text Python could print
    ({"ok": True, "hit": True, "stdout": "x"}, False),
    (b"not json\n", False),
    (b'{"ok":true,"hit":true,"stdout":"","stderr":""} trailing\n', False),
    (b'{"ok":true,"hit":true,"stdout":"","stderr":""', False),  # closed before the newline
    (b'[{"ok":true}]\n', False),
    (b'{"ok":true,"hit":' + b"[" * 50 + b"]" * 50 + b"}\n", False),
], ids=["miss", "bad-settings", "another-store", "busy", "old-daemon", "lone-surrogate", "no-stderr",
        "not-json", "trailing", "unterminated", "array", "deep"])
def test_anything_but_a_hit_runs_kache_with_the_same_arguments(client: Client, daemon: Callable, reply: object,
                                                               told: bool) -> None:
    """When the daemon answered for its own store, kache is told not to ask it again."""
    d = daemon(reply)
    args = [str(client.compiler), "--crate-name", "x", "--edition=2021"]
    out = client.run(*args)
    assert out.returncode == 3 and out.stdout == b"kache ran\n", out
    assert len(d.requests) == 1
    assert client.fallbacks() == [{"argv": args, "hits": "0" if told else None}]


def test_without_a_daemon_it_is_kache(client: Client) -> None:
    client.socket.unlink(missing_ok=True)
    out = client.run(str(client.compiler), "--crate-name", "x", KACHE_DAEMON_HITS="1")
    assert out.returncode == 3
    assert client.fallbacks() == [{"argv": [str(client.compiler), "--crate-name", "x"], "hits": "1"}]


def test_calls_the_daemon_cannot_serve_are_not_sent(client: Client, daemon: Callable) -> None:
    d = daemon({"ok": True, "hit": True, "stdout": "", "stderr": ""})
    for args in (["rustc", "-vV"], [str(client.compiler), "@args.txt"], ["--version"], ["list", "--json"], []):
        out = client.run(*args)
        assert out.returncode == 3, args
        assert client.fallbacks() == [{"argv": args, "hits": None}]
    assert d.requests == []


def test_a_daemon_that_does_not_answer_is_not_waited_for_long(client: Client, daemon: Callable) -> None:
    d = daemon(None)
    started = time.monotonic()
    out = client.run(str(client.compiler), "--crate-name", "x")
    assert out.returncode == 3 and len(d.requests) == 1
    assert client.fallbacks() == [{"argv": [str(client.compiler), "--crate-name", "x"], "hits": None}]
    assert time.monotonic() - started < 15  # the reply timeout (2 s), not the stand-in's 5 s sleep per request


def test_when_kache_cannot_run_the_compiler_runs(client: Client) -> None:
    client.socket.unlink(missing_ok=True)
    client.kache.chmod(0o644)
    try:
        out = client.run(str(client.compiler), "--crate-name", "x")
    finally:
        client.kache.chmod(0o755)
    assert out.returncode == 0
    assert out.stdout == b"compiler ran --crate-name x\n"
    assert out.stderr == b""  # was: the warning on rustc's stderr, which cargo keeps with the unit
    shutil.rmtree(client.base / ".cache", ignore_errors=True)  # said once per build: this is another
    client.kache.chmod(0o644)
    try:  # on a terminal, the warning is there
        status, said = run_in_pty([str(client.exe), str(client.compiler), "--crate-name", "x"], client.base,
                                  {"PATH": "/usr/bin:/bin", "FAKE_LOG": str(client.log), "HOME": str(client.base),
                                   "KACHE_CACHE_DIR": str(client.base)})
    finally:
        client.kache.chmod(0o755)
    assert status == 0
    assert said.splitlines() == [
        f"kache: warning: cannot run {client.kache}: Permission denied (os error 13); running rustc directly",
        "compiler ran --crate-name x"]


def test_when_kache_cannot_run_it_says_so_once_per_build_in_the_log(client: Client, tmp_path: Path) -> None:
    # Each call of a build (the same parent: cargo, here this process) ran rustc directly
    # and said so, 9 times in a small build; now once, and in kache.log of the store.
    client.socket.unlink(missing_ok=True)
    store = tmp_path / "store"
    store.mkdir()
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "KACHE_CACHE_DIR": str(store)}
    client.kache.chmod(0o644)
    try:
        outs = [client.run(str(client.compiler), "--crate-name", f"c{i}", **env) for i in range(3)]
        # nor on the terminal again (each call wrote it there)
        status, said = run_in_pty([str(client.exe), str(client.compiler), "--crate-name", "c3"], client.base,
                                  {"PATH": "/usr/bin:/bin", "HOME": str(client.base), **env})
        log = (store / "kache.log").read_text()
        # the next build (another parent: a shell that stays, as cargo does) says it again
        subprocess.run(["/bin/sh", "-c", '"$@"; true', "sh", str(client.exe), str(client.compiler)],
                       env={"PATH": "/usr/bin:/bin", "HOME": str(client.base), **env}, check=True, timeout=20)
    finally:
        client.kache.chmod(0o755)
    assert [o.stdout for o in outs] == [f"compiler ran --crate-name c{i}\n".encode() for i in range(3)]
    assert (status, said) == (0, "compiler ran --crate-name c3\n")
    line = f"kache: warning: cannot run {client.kache}: Permission denied (os error 13); running rustc directly\n"
    assert log.count(line) == 1, log
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d " + re.escape(line), log)
    assert (store / "kache.log").read_text().count(line) == 2


def test_a_build_in_the_terminals_background_is_not_stopped_by_its_warning(client: Client, tmp_path: Path) -> None:
    # `cargo build &` under `stty tostop`: the warning written to the terminal stopped
    # the build (SIGTTOU). It goes to the log only.
    client.socket.unlink(missing_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KACHE_CACHE_DIR": str(tmp_path / "store"),
           "FAKE_LOG": str(client.log)}
    (tmp_path / "store").mkdir()
    client.kache.chmod(0o644)
    try:
        status, said = run_in_pty_background([str(client.exe), str(client.compiler), "--crate-name", "x"],
                                             client.base, env, tmp_path / "out", timeout=20)
    finally:
        client.kache.chmod(0o755)
    assert status != STOPPED, "stopped by the terminal"
    assert status == 0 and (tmp_path / "out").read_text() == "compiler ran --crate-name x\n"
    assert said == ""
    assert "kache: warning: cannot run" in (tmp_path / "store" / "kache.log").read_text()


def test_build_errors_say_what_to_do(tmp_path: Path, client: Client) -> None:
    with pytest.raises(BuildError, match="no rustc at '/nonexistent/rustc'"):
        build_client(str(tmp_path / "c"), str(client.kache), str(tmp_path / "d.sock"),
                     "/nonexistent/rustc")
    with pytest.raises(BuildError, match="does not exist; create it"):
        build_client(str(tmp_path / "missing" / "c"), str(client.kache), str(tmp_path / "d.sock"))
    with pytest.raises(BuildError, match="not an executable kache"):
        build_client(str(tmp_path / "c"), str(tmp_path / "nope"), str(tmp_path / "d.sock"))
    with pytest.raises(BuildError, match="longer than a Unix socket address allows"):
        build_client(str(tmp_path / "c"), str(client.kache), "/" + "x" * 120 + "/daemon.sock")
    failing = tmp_path / "bad-rustc"
    failing.write_text("#!/bin/sh\necho 'error: no linker' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(BuildError, match=r"failed \(exit 1\):\nerror: no linker"):
        build_client(str(tmp_path / "c"), str(client.kache), str(tmp_path / "d.sock"), str(failing))
    assert not (tmp_path / "c").exists() and list(tmp_path.glob("c.*")) == []


def test_it_says_what_it_was_built_with_and_doctor_checks_it(client: Client, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KACHE_CACHE_DIR", str(client.base))
    assert client_info(str(client.exe)) == {"kache": str(client.kache), "socket": str(client.socket),
                                            "hits_variable": HITS_VARIABLE}
    wrapper = (str(client.exe), "environment variable RUSTC_WRAPPER")  # doctor's effective_wrapper
    ok = check_native_client(wrapper, str(client.base))
    assert ok is not None and ok.status == OK, ok
    elsewhere = check_native_client(wrapper, str(tmp_path / "store"))
    assert elsewhere is not None and elsewhere.status == WARN
    assert f"asks the daemon at {client.socket}, but the store is {tmp_path / 'store'}" in elsewhere.detail
    assert elsewhere.fix_hint.startswith("`kache daemon client` builds it again")
    client.kache.chmod(0o644)
    try:
        gone = check_native_client(wrapper, str(client.base))
    finally:
        client.kache.chmod(0o755)
    assert gone is not None and gone.status == FAIL and "run rustc without the cache" in gone.detail
    impostor = tmp_path / "kache-client"
    impostor.write_text("#!/bin/sh\necho not json\n")
    impostor.chmod(0o755)
    assert client_info(str(impostor)) is None
    unknown = check_native_client((str(impostor), "environment variable RUSTC_WRAPPER"), str(client.base))
    assert unknown is not None and unknown.status == WARN and "does not say what it was built with" in unknown.detail
    assert check_native_client((str(client.kache), "environment variable RUSTC_WRAPPER"), str(client.base)) is None  # kache itself


@pytest.mark.parametrize("case", ["variable", "user file", "user file, dotted key", "system file", "xdg default",
                                  "home default", "expanded", "user file wins over system file",
                                  "a form it does not read"])
def test_it_finds_the_socket_at_run_time_as_kache_finds_the_store(client: Client, tmp_path: Path, case: str
                                                                   ) -> None:
    """Nothing about the store is built in (a package builds one client for every user):
    the socket comes from the same layers as kache's settings, read when it runs."""
    home = tmp_path / "home"
    (home / ".config" / "kache").mkdir(parents=True)
    user = home / ".config" / "kache" / "config.toml"
    system = tmp_path / "etc" / "kache.toml"
    system.parent.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    if case == "variable":
        env["KACHE_CACHE_DIR"] = "/srv/cache/kache"
        want = "/srv/cache/kache"
    elif case == "user file":
        user.write_text('# my settings\n[cache.remote]\nlocal_store = "/not/this"\n'
                        '[cache]  # the store\nlocal_store = "/data/kache"  # fast disk\n')
        want = "/data/kache"
    elif case == "user file, dotted key":
        user.write_text("cache.local_store = '/data/literal'\n")
        want = "/data/literal"
    elif case == "system file":
        system.write_text('[cache]\nlocal_store = "/var/cache/kache-$USER"\n')
        env.update(KACHE_CONFIG=str(system), USER="ann")
        want = "/var/cache/kache-ann"
    elif case == "xdg default":
        env["XDG_CACHE_HOME"] = "/xdg/cache"
        want = "/xdg/cache/kache"
    elif case == "home default":
        want = f"{home}/.cache/kache"
    elif case == "expanded":
        user.write_text('[cache]\nlocal_store = "~/stores/${NAME}/x"\n')
        env["NAME"] = "one"
        want = f"{home}/stores/one/x"
    elif case == "user file wins over system file":
        user.write_text('[cache]\nlocal_store = "/user/store"\n')
        system.write_text('[cache]\nlocal_store = "/system/store"\n')
        env["KACHE_CONFIG"] = str(system)
        want = "/user/store"
    else:  # an inline table: it does not read it, and says no socket rather than a wrong one
        user.write_text('cache = { local_store = "/inline" }\n')
        want = f"{home}/.cache/kache"
    out = subprocess.run([str(client.exe), "--kache-client-info"], env=env, capture_output=True, text=True)
    assert json.loads(out.stdout)["socket"] == f"{want}/daemon.sock"
    if case == "user file":
        from kache import settings as S
        from kache.errors import SettingsError

        # kache itself takes the misplaced `cache.remote.local_store` for a misspelt store
        # setting and names no store at all (the client's socket is only a place to ask)
        with pytest.raises(SettingsError, match="cache.remote.local_store"):
            str(S.load(env=env).local_store)
    elif case != "a form it does not read":
        from kache import settings as S

        assert str(S.load(env=env).local_store) == want  # what kache itself reads there
