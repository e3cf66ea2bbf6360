"""The native thin client (kache/native/client.rs), built with the real rustc, against a
stand-in daemon on a real Unix socket: what it sends, how it reads every kind of reply,
and that everything it does not serve ends in running kache with the same arguments
(or, when kache itself cannot run, the compiler). Then its hand-over of a declined call
to the daemon's runner: against a stand-in runner (the protocol, the descriptors, every
way the runner can answer or fail), and against the real one."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kache.daemon.wire import STALL_SECS, STALLED_NAME
from kache.doctor import FAIL, OK, WARN, check_native_client
from kache.native import BuildError, build_client, client_info
from kache.wrapper.runner import READY
from tests.support.daemon import Running, serve_lines
from tests.support.e2e import runs_cargo
from tests.support.tty import STOPPED, run_in_pty, run_in_pty_background
from tests.support.waiting import wait_for

HITS_VARIABLE = "KACHE_DAEMON_HITS"
FAKE_KACHE = f"""#!{sys.executable}
import json, os, sys
seen = {{"argv": sys.argv[1:], "hits": os.environ.get("{HITS_VARIABLE}")}}
if "FAKE_MARK" in os.environ:  # whether that file was there when kache started
    seen["mark"] = os.path.exists(os.environ["FAKE_MARK"])
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(seen) + "\\n")
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

    def run(self, *args: str | bytes, timeout: float = 20, pass_fds: tuple[int, ...] = (), new_session: bool = False,
            **env: str | bytes) -> subprocess.CompletedProcess[bytes]:
        self.log.unlink(missing_ok=True)
        base = {"PATH": "/usr/bin:/bin", "FAKE_LOG": str(self.log), "HOME": str(self.base),
                "KACHE_CACHE_DIR": str(self.base)}
        return subprocess.run([str(self.exe), *args], env={**base, **env}, cwd=self.base, capture_output=True,
                              timeout=timeout, pass_fds=pass_fds, start_new_session=new_session)

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
        (client.base / STALLED_NAME).unlink(missing_ok=True)  # a stall a test before noted
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
    """One call waits for the reply timeout (2 s) and notes the stall; the calls of the
    next STALL_SECS do not ask (kache reads the same note), so a stopped daemon costs a
    build one timeout, not one per call. Later it is asked again."""
    d = daemon(None)
    started = time.monotonic()
    out = client.run(str(client.compiler), "--crate-name", "x")
    assert out.returncode == 3 and len(d.requests) == 1
    assert client.fallbacks() == [{"argv": [str(client.compiler), "--crate-name", "x"], "hits": None}]
    assert time.monotonic() - started < 15  # the reply timeout (2 s), not the stand-in's 5 s sleep per request
    stall = client.base / STALLED_NAME
    assert stall.exists() and stall.stat().st_mode & 0o777 == 0o600
    started = time.monotonic()
    for _ in range(3):
        out = client.run(str(client.compiler), "--crate-name", "x")
        assert out.returncode == 3 and client.fallbacks()[0]["hits"] is None  # kache decides, asks nothing
    assert len(d.requests) == 1
    assert time.monotonic() - started < 1.9, "a call waited for the daemon again"
    old = time.time() - STALL_SECS - 1
    os.utime(stall, (old, old))
    client.run(str(client.compiler), "--crate-name", "x")
    wait_for(lambda: len(d.requests) == 2, 15, "the aged note to let the client ask again")


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


# ---------------------------------------------------------------------- the daemon's runner

OFFERED = {"ok": True, "hit": False, "run": True}
"""The daemon's reply to a call it declines and offers to run in its runner."""


class Descriptors(list[int]):
    """Descriptors the stand-in runner received; ``close()`` closes those still open."""

    def close(self) -> None:
        while self:
            os.close(self.pop())


Act = Callable[[socket.socket, dict, Descriptors], None]


class FakeRunner:
    """Stands in for the daemon's runner on the client's ``run.sock``: for each connection,
    reads the request line and the descriptors that came with it, keeps what it saw, lets
    ``act`` answer, then closes what ``act`` left open."""

    def __init__(self, path: Path, act: Act) -> None:
        self.act = act
        self.requests: list[dict] = []
        self.controls: list[list[tuple[int, int]]] = []
        """(level, type) of each control message of each request's first read."""
        self.received: list[list[tuple[int, int, bool]]] = []
        """(st_dev, st_ino, isatty) of each descriptor received, in the order received."""
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.path = path
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import array

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(READY)
                data, ancdata, flags, _ = conn.recvmsg(1 << 20, socket.CMSG_SPACE(4 * 256))
                fds = Descriptors()
                for _level, _kind, payload in ancdata:
                    fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
                try:
                    self.controls.append([(level, kind) for level, kind, _ in ancdata])
                    assert not flags & socket.MSG_CTRUNC
                    self.received.append([(os.fstat(fd).st_dev, os.fstat(fd).st_ino, os.isatty(fd)) for fd in fds])
                    while data and not data.endswith(b"\n"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    self.requests.append(json.loads(data))
                    self.act(conn, self.requests[-1], fds)
                finally:
                    fds.close()

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


def answer(conn: socket.socket, *lines: dict | bytes) -> None:
    conn.sendall(b"".join(x if isinstance(x, bytes) else json.dumps(x).encode() + b"\n" for x in lines))


@pytest.fixture
def runner(client: Client) -> Iterator[Callable[[Act], FakeRunner]]:
    started: list[FakeRunner] = []

    def start(act: Act) -> FakeRunner:
        r = FakeRunner(client.base / "run.sock", act)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


def ends_with(status: int, text: bytes = b"written by the runner\n") -> Act:
    """A runner that writes ``text`` to the call's stdout and says the call exited ``status``."""
    def act(conn: socket.socket, request: dict, fds: Descriptors) -> None:
        os.write(fds[request["fds"].index(1)], text)
        fds.close()  # else the client's stdout stays open here after it exits
        answer(conn, {"ok": True, "pid": os.getpid()}, {"ok": True, "status": status})
    return act


def test_a_declined_call_runs_in_the_runner_with_the_clients_descriptors(client: Client, daemon: Callable,
                                                                        runner: Callable, tmp_path: Path) -> None:
    daemon(OFFERED)
    jobserver_r, jobserver_w = os.pipe()  # as cargo's jobserver: open in the client, not close-on-exec
    high = os.dup2(jobserver_w, 40, inheritable=False)
    os.close(jobserver_w)

    def act(conn: socket.socket, request: dict, fds: Descriptors) -> None:
        os.write(fds[request["fds"].index(40)], b"+")
        ends_with(5)(conn, request, fds)

    r = runner(act)
    args = [str(client.compiler), "--crate-name", "café", "\udcff-not-utf8"]
    env = {"PATH": "/usr/bin:/bin", "FAKE_LOG": str(client.log), "HOME": str(client.base),
           "KACHE_CACHE_DIR": str(client.base), HITS_VARIABLE: "1", "ODD": "\udce2end"}
    try:
        out = subprocess.run([str(client.exe), *map(os.fsencode, args)], env={k: os.fsencode(v) for k, v in env.items()},
                             cwd=client.base, capture_output=True, umask=0o027, pass_fds=(high,),
                             start_new_session=True, timeout=20)
    finally:
        os.close(high)
    try:
        token = os.read(jobserver_r, 16)  # every write end is closed now: b"" when nothing was written
        pipe = os.fstat(jobserver_r)
    finally:
        os.close(jobserver_r)
    assert out.returncode == 5, out
    assert out.stdout == b"written by the runner\n" and out.stderr == b""
    assert token == b"+"
    assert client.fallbacks() == []  # kache itself never ran
    [request] = r.requests
    assert request["v"] == 1 and request["op"] == "run" and "store" not in request
    assert request["argv"] == args and request["cwd"] == str(client.base) and request["umask"] == 0o027
    assert request["env"] == env  # as it is: rustc gets cargo's environment (the runner asks no daemon)
    assert isinstance(request["client_ms"], float) and 0 <= request["client_ms"] < 1000
    # every descriptor an exec would pass on, ascending; not the client's own sockets (close-on-exec)
    assert request["fds"] == [0, 1, 2, 40] and request["tty"] is False
    assert r.controls == [[(socket.SOL_SOCKET, socket.SCM_RIGHTS)]]  # one message, on the first part
    assert len(r.received[0]) == 4
    assert r.received[0][3][:2] == (pipe.st_dev, pipe.st_ino)  # the same pipe, not a copy of its name


def test_it_hands_the_runner_the_terminal_when_the_build_is_in_its_foreground(client: Client, daemon: Callable,
                                                                              runner: Callable) -> None:
    daemon(OFFERED)

    def act(conn: socket.socket, request: dict, fds: Descriptors) -> None:
        os.write(fds[-1], b"said on the terminal\n")
        fds.close()
        answer(conn, {"ok": True, "pid": os.getpid()}, {"ok": True, "status": 0})

    r = runner(act)
    status, said = run_in_pty([str(client.exe), str(client.compiler), "--crate-name", "x"], client.base,
                              {"PATH": "/usr/bin:/bin", "FAKE_LOG": str(client.log), "HOME": str(client.base),
                               "KACHE_CACHE_DIR": str(client.base)}, timeout=20)
    assert (status, said) == (0, "said on the terminal\n")
    [request] = r.requests
    assert request["tty"] is True and request["fds"][:3] == [0, 1, 2]  # (then what pty.fork leaves open)
    ttys = [tty for _, _, tty in r.received[0]]
    assert len(ttys) == len(request["fds"]) + 1 and ttys[:3] == [True] * 3 and ttys[-1]  # then /dev/tty
    assert client.fallbacks() == []


@pytest.mark.parametrize("status", [0, 1, 101, 255])
def test_the_client_exits_with_the_calls_status(client: Client, daemon: Callable, runner: Callable,
                                                status: int) -> None:
    daemon(OFFERED)
    runner(ends_with(status))
    out = client.run(str(client.compiler), "--crate-name", "x", new_session=True)
    assert (out.returncode, out.stdout) == (status, b"written by the runner\n")
    assert client.fallbacks() == []


@pytest.mark.parametrize("signum", [15, 13, 9])  # 13: SIGPIPE, which Rust programs ignore
def test_the_client_dies_of_the_calls_signal(client: Client, daemon: Callable, runner: Callable,
                                             signum: int) -> None:
    daemon(OFFERED)
    runner(lambda conn, request, fds: answer(conn, {"ok": True, "pid": os.getpid()}, {"ok": True, "signal": signum}))
    out = client.run(str(client.compiler), "--crate-name", "x", new_session=True)
    assert out.returncode == -signum, out
    assert client.fallbacks() == []


def test_the_reply_lines_may_come_one_by_one(client: Client, daemon: Callable, runner: Callable) -> None:
    daemon(OFFERED)

    def act(conn: socket.socket, request: dict, fds: Descriptors) -> None:
        fds.close()
        answer(conn, b'{"ok": true, "pi')
        time.sleep(0.1)
        answer(conn, b'd": 1}\n{"ok"')
        time.sleep(0.3)
        answer(conn, b': true, "status": 7}\n')

    runner(act)
    out = client.run(str(client.compiler), "--crate-name", "x", new_session=True)
    assert out.returncode == 7 and client.fallbacks() == []


@pytest.mark.parametrize("first", [
    {"ok": False, "why": "the runner is busy"},
    {"ok": True},
    {"ok": True, "pid": 0},
    {"ok": True, "pid": 12.5},
    {"ok": True, "pid": "12"},
    b"not json\n",
    b"",  # closed without a word
    None,  # no answer in time
], ids=["refused", "no-pid", "pid-0", "pid-float", "pid-text", "junk", "closed", "silent"])
def test_when_the_runner_runs_nothing_kache_runs_the_call(client: Client, daemon: Callable, runner: Callable,
                                                          first: dict | bytes | None) -> None:
    daemon(OFFERED)

    def act(conn: socket.socket, request: dict, fds: Descriptors) -> None:
        if first is None:
            time.sleep(3)  # past the client's reply timeout (2 s)
        else:
            answer(conn, first)

    r = runner(act)
    args = [str(client.compiler), "--crate-name", "x"]
    out = client.run(*args, new_session=True)
    assert out.returncode == 3 and out.stdout == b"kache ran\n", out
    assert len(r.requests) == 1
    assert client.fallbacks() == [{"argv": args, "hits": "0"}]


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
@pytest.mark.parametrize("last", [b"", b'{"ok": true, "status": "3"}\n', b'{"ok": false}\n', b"{\n"],
                         ids=["closed", "status-text", "not-ok", "junk"])
def test_when_the_runner_dies_the_client_waits_for_the_call_then_kache_runs_it(
        client: Client, daemon: Callable, runner: Callable, tmp_path: Path, last: bytes, reaped: bool) -> None:
    """The call's process may still be writing its outputs: kache must not run the call
    again beside it. A call that ended but is not reaped yet (a zombie: its parent, the
    runner, is stuck) has ended."""
    daemon(OFFERED)
    mark = tmp_path / "call-ended"
    calls: list[subprocess.Popen[bytes]] = []

    def act(conn: socket.socket, request: dict, fds: Descriptors) -> None:
        fds.close()
        calls.append(subprocess.Popen(["/bin/sh", "-c", f"sleep 0.5; : > '{mark}'"]))
        answer(conn, {"ok": True, "pid": calls[0].pid}, last)
        conn.shutdown(socket.SHUT_RDWR)  # the runner is gone; its call is not
        if reaped:
            calls[0].wait()

    runner(act)
    args = [str(client.compiler), "--crate-name", "x"]
    try:
        out = client.run(*args, new_session=True, FAKE_MARK=str(mark))
    finally:
        for call in calls:
            call.wait()
    assert out.returncode == 3 and out.stdout == b"kache ran\n", out
    assert client.fallbacks() == [{"argv": args, "hits": "0", "mark": True}]


@pytest.mark.parametrize("reply, told", [
    ({"ok": True, "hit": False}, True),
    ({"ok": True, "hit": False, "run": False}, True),
    ({"ok": True, "hit": False, "run": 1}, True),
    ({"ok": True, "hit": False, "why": "another store", "run": True}, False),
    ({"ok": False, "error": "busy", "run": True}, False),
], ids=["not-offered", "run-false", "run-not-a-bool", "another-store", "error"])
def test_the_runner_is_asked_only_when_the_daemon_offers_it(client: Client, daemon: Callable, runner: Callable,
                                                            reply: dict, told: bool) -> None:
    daemon(reply)
    r = runner(ends_with(0))
    args = [str(client.compiler), "--crate-name", "x"]
    out = client.run(*args, new_session=True)
    assert out.returncode == 3 and r.requests == []
    assert client.fallbacks() == [{"argv": args, "hits": "0" if told else None}]


def test_without_a_runner_kache_runs_the_call(client: Client, daemon: Callable) -> None:
    daemon(OFFERED)
    (client.base / "run.sock").unlink(missing_ok=True)
    args = [str(client.compiler), "--crate-name", "x"]
    out = client.run(*args, new_session=True)
    assert out.returncode == 3 and client.fallbacks() == [{"argv": args, "hits": "0"}]


@pytest.mark.parametrize("count", [200, 201])
def test_at_most_200_descriptors_go_to_the_runner(client: Client, daemon: Callable, runner: Callable,
                                                  count: int) -> None:
    daemon(OFFERED)
    r = runner(ends_with(0))
    extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(count - 3)]  # besides stdin, stdout, stderr
    try:
        out = client.run(str(client.compiler), "--crate-name", "x", new_session=True, pass_fds=tuple(extra))
    finally:
        for fd in extra:
            os.close(fd)
    if count <= 200:
        assert out.returncode == 0 and client.fallbacks() == []
        assert len(r.requests[0]["fds"]) == count and len(r.received[0]) == count
    else:
        assert out.returncode == 3 and r.requests == []
        assert client.fallbacks() == [{"argv": [str(client.compiler), "--crate-name", "x"], "hits": "0"}]


# ---------------------------------------------------------------------- with the real runner

SLOW_COMPILER = """#!/bin/sh
echo "ppid=$PPID args=$*"
echo "to stderr" >&2
[ -n "$PID_FILE" ] && echo $$ > "$PID_FILE"
[ -n "$SLEEP" ] && sleep "$SLEEP"
exit "${EXIT:-0}"
"""


@pytest.fixture
def real_runner(start_daemon: Callable[..., Running], client: Client, tmp_path: Path) -> tuple[Running, Path]:
    """A daemon (in this process) with its runner up; a compiler kache passes through to
    (no --out-dir: the daemon declines it and offers its runner)."""
    if sys.platform != "linux":
        pytest.skip("the runner is Linux only")
    running = start_daemon()
    wait_for(lambda: os.path.exists(os.path.join(running.root, "run.sock")), 20, "the runner's socket")
    compiler = tmp_path / "slow-rustc"
    compiler.write_text(SLOW_COMPILER)
    compiler.chmod(0o755)
    return running, compiler


def test_the_real_runner_runs_the_call_for_the_client(client: Client, real_runner: tuple[Running, Path]) -> None:
    running, compiler = real_runner
    out = client.run(str(compiler), "--crate-name", "x", new_session=True, KACHE_CACHE_DIR=running.root, EXIT="7")
    assert out.returncode == 7, out
    assert out.stdout.decode() == f"ppid={running.status()['runner']} args=--crate-name x\n"  # the runner's child
    assert out.stderr == b"to stderr\n"
    assert client.fallbacks() == []


def test_a_stopped_runner_holds_nothing_of_the_client(client: Client, real_runner: tuple[Running, Path]) -> None:
    """A runner that does not answer (stopped) never gets the client's descriptors: the
    client runs kache, and cargo's pipes end when kache's output does (no hang)."""
    running, compiler = real_runner
    pid = running.status()["runner"]
    os.kill(pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        out = client.run(str(compiler), "--crate-name", "x", new_session=True, KACHE_CACHE_DIR=running.root,
                         timeout=30)  # capture_output: returns only once every holder of the pipes closed them
        took = time.monotonic() - began
    finally:
        os.kill(pid, signal.SIGCONT)
    assert out.returncode == 3 and out.stdout == b"kache ran\n", out
    assert client.fallbacks() == [{"argv": [str(compiler), "--crate-name", "x"], "hits": "0"}]
    assert took < 20, took  # the ready timeout, not the runner's stop
    # For a while the next calls ask neither the daemon nor its runner (running again now):
    # kache runs them as if no daemon were there ("hits" unset: nothing declined them).
    assert os.path.exists(os.path.join(running.root, STALLED_NAME))
    client.run(str(compiler), "--crate-name", "x", new_session=True, KACHE_CACHE_DIR=running.root)
    assert client.fallbacks() == [{"argv": [str(compiler), "--crate-name", "x"], "hits": None}]


def test_a_runner_stopped_during_the_call_does_not_hold_the_build(client: Client,
                                                                  real_runner: tuple[Running, Path],
                                                                  tmp_path: Path) -> None:
    """The runner stops (SIGSTOP) while the call runs: once the call's process has ended
    and the runner has not said how for a second, the client runs the call again (kache)
    instead of waiting for the runner to go on."""
    running, compiler = real_runner
    pid = running.status()["runner"]
    pid_file = tmp_path / "pid"
    client.log.unlink(missing_ok=True)
    env = {"PATH": "/usr/bin:/bin", "FAKE_LOG": str(client.log), "HOME": str(client.base),
           "KACHE_CACHE_DIR": running.root, "PID_FILE": str(pid_file), "SLEEP": "1", "EXIT": "0"}
    proc = subprocess.Popen([str(client.exe), str(compiler), "--crate-name", "x"], env=env, cwd=client.base,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 20, "the call to start")
        os.kill(pid, signal.SIGSTOP)
        out, _ = proc.communicate(timeout=30)
    finally:
        os.kill(pid, signal.SIGCONT)
        proc.kill()
        proc.wait()
    assert proc.returncode == 3 and out.endswith(b"kache ran\n"), out  # run again, by kache
    assert client.fallbacks() == [{"argv": [str(compiler), "--crate-name", "x"], "hits": "0"}]


def test_when_cargo_kills_the_client_the_runner_stops_the_call(client: Client, real_runner: tuple[Running, Path],
                                                               tmp_path: Path) -> None:
    """The client has no signal handlers: killed (Ctrl-C, cargo giving up), its connection
    closes and the runner stops the call's process group."""
    running, compiler = real_runner
    pid_file = tmp_path / "pid"
    client.log.unlink(missing_ok=True)  # what an earlier test's client left
    env = {"PATH": "/usr/bin:/bin", "FAKE_LOG": str(client.log), "HOME": str(client.base),
           "KACHE_CACHE_DIR": running.root, "PID_FILE": str(pid_file), "SLEEP": "60"}
    proc = subprocess.Popen([str(client.exe), str(compiler), "--crate-name", "x"], env=env, cwd=client.base,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 20, "the call to start")
        call = int(pid_file.read_text())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == -signal.SIGINT
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not os.path.exists(f"/proc/{call}") or Path(f"/proc/{call}/stat").read_text()
             .rpartition(")")[2].split()[0] == "Z", 10, "the call to stop")
    assert client.fallbacks() == []
