"""Credentials never leak: not to the terminal, not to a log, not to any file kache writes.

Every credential a user can give kache is set to a unique marker string: the
``KACHE_S3_ACCESS_KEY``/``KACHE_S3_SECRET_KEY`` pair, the AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) and a profile
in ``~/.aws/credentials``. kache documents all of them as never shown or logged (the
access key id included: ``x-secret`` in the schema; :mod:`kache.remote.s3` scrubs every
credential it signs with). Then kache runs everything that could print or store one:
builds against a remote that fails (an unreachable endpoint, HTTP 403 and HTTP 500 from
a server that echoes each request, signature header included, back in its error
message), a build against a working S3 (moto), ``kache daemon run`` at debug level,
``kache sync`` that succeeds and that fails (403, 500, unreachable, wrong bucket, bad
endpoint URL; plain and ``--json``), ``kache config show`` and ``kache doctor`` (plain and
``--json``). Afterwards every file under the machine's directory (store, HOME, target
dir, workspace) and every captured stdout/stderr is searched for the markers (as
written, percent-encoded and JSON-escaped); the one file kache was handed them in, the
credentials file, is the only exception.

The echo server is the control: it records that the access key really reached it, and
the outputs show ``[redacted]`` where its echo came back, so the scan is not vacuous.
"""

from __future__ import annotations

import html
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import reliability
from tests.support.daemon import pending_intents
from tests.support.env import CLEARED_PREFIXES, FIXTURES
from tests.support.s3 import moto_server
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.security, pytest.mark.e2e]

ACCESS = "KACHEMARKACCESSKEY7Q2Z"
SECRET = "kache-mark-secret/Zq9+Wx4e"
AWS_ACCESS = "KACHEMARKAWSKEYID5R8T"
AWS_SECRET = "kache-mark-aws-secret/Pp3+Lk"
AWS_TOKEN = "kache-mark-aws-session-token-8Lm"
PROFILE = "kachemark"
PROFILE_ACCESS = "KACHEMARKPROFILEKEY3J"
PROFILE_SECRET = "kache-mark-profile-secret/Hd6+Yb"
MARKERS = (ACCESS, SECRET, AWS_ACCESS, AWS_SECRET, AWS_TOKEN, PROFILE_ACCESS, PROFILE_SECRET)

KEYS = {"KACHE_S3_ACCESS_KEY": ACCESS, "KACHE_S3_SECRET_KEY": SECRET, "AWS_ACCESS_KEY_ID": AWS_ACCESS,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_SESSION_TOKEN": AWS_TOKEN}
"""kache's own pair wins; the AWS variables are set too (they must not show either)."""
PROFILE_ONLY = {"KACHE_S3_PROFILE": PROFILE}
AWS_ONLY = {"AWS_ACCESS_KEY_ID": AWS_ACCESS, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_SESSION_TOKEN": AWS_TOKEN}


def _kache() -> str:
    exe = Path(sys.executable).with_name("kache")
    return str(exe) if exe.exists() else shutil.which("kache") or "kache"


def _spellings(marker: str) -> set[bytes]:
    return {marker.encode(), urllib.parse.quote(marker, safe="").encode(),
            urllib.parse.quote_plus(marker).encode(), json.dumps(marker)[1:-1].encode()}


NEEDLES = {s: m for m in MARKERS for s in _spellings(m)}


# ---------------------------------------------------------------------- servers


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Fails every request with the server's status and an S3 error whose message
    echoes the request line and every header (Authorization included). A HEAD (which
    can carry no message) gets 404, so an upload goes on to its PUT and that echoes."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        server: Any = self.server
        headers = "; ".join(f"{k}: {v}" for k, v in self.headers.items())
        with server.lock:
            server.seen.append(headers)
        code = "AccessDenied" if server.status == 403 else "InternalError"
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{html.escape(f'you sent {self.command} {self.path} with {headers}')}</Message>"
                "<RequestId>kache-echo</RequestId></Error>").encode()
        self.send_response(404 if self.command == "HEAD" else server.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Echo:
    url: str
    server: Any

    def saw(self, text: str) -> bool:
        with self.server.lock:
            return any(text in h for h in self.server.seen)


def _echo_server(status: int) -> tuple[Echo, Any]:
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    server.status, server.seen, server.lock = status, [], threading.Lock()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return Echo(f"http://{host}:{port}", server), server


@dataclass
class Remotes:
    moto: str
    bucket: str
    e403: Echo
    e500: Echo
    dead: str


@pytest.fixture(scope="module")
def remotes() -> Iterator[Remotes]:
    """moto on 127.0.0.1 with one bucket; two echo servers (403, 500); a closed port."""
    import boto3

    with moto_server() as endpoint:
        boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                              region_name="us-east-1").client("s3", endpoint_url=endpoint).create_bucket(
            Bucket="kache-creds")
        e403, s403 = _echo_server(403)
        e500, s500 = _echo_server(500)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        s.close()
        try:
            yield Remotes(endpoint, "kache-creds", e403, e500, dead)
        finally:
            for srv in (s403, s500):
                srv.shutdown()
                srv.server_close()


# ---------------------------------------------------------------------- the machine


@dataclass
class Machine:
    """A machine of its own (HOME, config, workspace, stores) under one directory, and
    every output its kache processes printed."""

    base: Path
    home: Path
    ws: Path
    env: dict[str, str]
    outputs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def credentials_file(self) -> Path:
        return self.home / ".aws" / "credentials"

    def configure(self, endpoint: str, bucket: str) -> None:
        """The remote in the user's config file (what a daemon started by a build reads)."""
        config = self.home / ".config" / "kache" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[cache.remote]\nbucket = "{bucket}"\nendpoint = "{endpoint}"\n')

    def environ(self, creds: dict[str, str], **extra: str) -> dict[str, str]:
        return {**self.env, **creds, **extra}

    def run(self, label: str, args: list[str], env: dict[str, str], timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(args, cwd=self.ws, env=env, capture_output=True, text=True, timeout=timeout)
        self.outputs.append((f"{label}: stdout", out.stdout))
        self.outputs.append((f"{label}: stderr", out.stderr))
        return out

    def kache(self, label: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return self.run(label, [_kache(), *args], env)

    def build(self, label: str, env: dict[str, str]) -> None:
        self.run(f"{label}: cargo clean", ["cargo", "clean", "--offline"], env)
        out = self.run(label, ["cargo", "build", "--offline"], env, timeout=300)
        reliability.count("builds run")
        if out.returncode != 0:
            reliability.count("builds failed")
            raise AssertionError(f"{label}: cargo build failed:\n{out.stderr}")

    def stop_daemon(self, env: dict[str, str]) -> None:
        self.kache("daemon stop", ["daemon", "stop"], env)

    def leaks(self) -> list[str]:
        """Where a marker shows: files under the machine (but the credentials file), and
        the outputs captured so far."""
        found = []
        for dirpath, _, filenames in os.walk(self.base):
            for name in filenames:
                path = Path(dirpath) / name
                if path == self.credentials_file or not path.is_file():
                    continue
                data = path.read_bytes()
                found += [f"{path}: {NEEDLES[n]}" for n in NEEDLES if n in data]
        for label, text in self.outputs:
            data = text.encode("utf-8", "surrogateescape")
            found += [f"{label}: {NEEDLES[n]}" for n in NEEDLES if n in data]
        return sorted(set(found))


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    base = Path(tempfile.mkdtemp(prefix="kache-creds-"))
    home = base / "home"
    (home / ".cargo").mkdir(parents=True)
    creds = home / ".aws" / "credentials"
    creds.parent.mkdir()
    creds.write_text(f"[{PROFILE}]\naws_access_key_id = {PROFILE_ACCESS}\naws_secret_access_key = {PROFILE_SECRET}\n")
    creds.chmod(0o600)
    ws = base / "ws"
    shutil.copytree(FIXTURES / "ws", ws)
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_PREFIXES)}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               CARGO_HOME=str(home / ".cargo"),
               RUSTUP_HOME=os.environ.get("RUSTUP_HOME") or os.path.expanduser("~/.rustup"),
               RUSTC_WRAPPER=_kache(), CARGO_TARGET_DIR=str(base / "target"), KACHE_LOG="kache=debug",
               KACHE_DAEMON_IDLE_TIMEOUT="60")
    m = Machine(base, home, ws, env)
    try:
        yield m
    finally:
        for store in base.glob("store-*"):
            if not (store / "daemon.pid").exists():
                continue
            subprocess.run([_kache(), "daemon", "stop"], env={**env, "KACHE_CACHE_DIR": str(store)},
                           capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _log(store: Path) -> str:
    path = store / "daemon.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _assert_no_leak(m: Machine) -> None:
    leaks = m.leaks()
    assert not leaks, "credentials leaked:\n" + "\n".join(leaks)


# ---------------------------------------------------------------------- builds


@pytest.mark.parametrize("which", ["403", "moto"])
def test_a_build_and_its_daemon_leak_no_credential(machine: Machine, remotes: Remotes, which: str) -> None:
    """A cold build through kache with a remote (the daemon it starts checks the remote
    on each miss and uploads each new entry), at debug level, against a remote that
    answers 403 with the request echoed and against a working one: no marker anywhere."""
    endpoint = {"403": remotes.e403.url, "moto": remotes.moto}[which]
    machine.configure(endpoint, remotes.bucket)
    store = machine.base / f"store-build-{which}"
    env = machine.environ(KEYS, KACHE_CACHE_DIR=str(store))
    try:
        machine.build(f"build ({which})", env)
        if which == "moto":
            wait_for(lambda: "uploaded" in _log(store) and not pending_intents(store), 60,
                     "the uploads to moto", interval=0.1)
        else:
            wait_for(lambda: "upload failed" in _log(store), 60, "an upload failure in the daemon's log",
                     interval=0.1)
    finally:
        machine.stop_daemon(env)
    if which == "403":
        assert remotes.e403.saw(f"Credential={ACCESS}/"), "the access key never reached the echo server"
        assert "[redacted]" in _log(store), "the echo (with the access key) never came back to be scrubbed"
    _assert_no_leak(machine)


# ---------------------------------------------------------------------- the daemon in the foreground


@pytest.fixture(scope="module")
def filled_store(machine: Machine) -> Path:
    """A store with entries of the workspace's crates and their upload intents pending,
    made directly: copied for each test. The intents name no remote, as an older kache
    left them: the daemon sends them to the remote of its own settings, with its own
    credentials."""
    from tests.support.entries import add_seeded_entry

    store = machine.base / "store-filled"
    for crate in ("kc_core", "kc_util", "kc_macros"):
        key = add_seeded_entry(store, crate, f"creds {crate}")
        (store / "uploads").mkdir(mode=0o700, exist_ok=True)
        (store / "uploads" / f"{key}.{crate}").touch(mode=0o600)
    return store


def _daemon_run(machine: Machine, env: dict[str, str], store: Path, until: str, label: str) -> None:
    """``kache daemon run`` in the foreground until its log says ``until``; SIGTERM."""
    proc = subprocess.Popen([_kache(), "daemon", "run"], env=env, cwd=machine.ws, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: until in _log(store) or proc.poll() is not None, 60, f"{until!r} in the daemon's log",
                 interval=0.1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        machine.outputs += [(f"{label}: stdout", out), (f"{label}: stderr", err)]
    assert until in _log(store), err


def test_the_daemon_at_debug_level_leaks_no_credential(machine: Machine, remotes: Remotes,
                                                        filled_store: Path) -> None:
    """``kache daemon run`` with ``KACHE_LOG=kache=debug`` and upload intents to work
    on, with each kind of credential (one daemon each, at once) against the echoing 403
    server, then with kache's key pair against moto: nothing in its stderr or its log."""
    creds = {"keys": (KEYS, ACCESS), "profile": (PROFILE_ONLY, PROFILE_ACCESS), "aws-env": (AWS_ONLY, AWS_ACCESS)}
    stores = {kind: machine.base / f"store-daemon-{kind}" for kind in creds}
    for store in stores.values():
        shutil.copytree(filled_store, store)
    def run(kind: str, name: str = "403", endpoint: str = remotes.e403.url, until: str = "upload failed") -> None:
        env = machine.environ(creds[kind][0], KACHE_CACHE_DIR=str(stores[kind]), KACHE_S3_ENDPOINT=endpoint,
                              KACHE_S3_BUCKET=remotes.bucket)
        _daemon_run(machine, env, stores[kind], until, f"daemon run ({kind}, {name})")

    with ThreadPoolExecutor(max_workers=len(creds)) as pool:
        list(pool.map(run, creds))
    # And once where uploads succeed, from a fresh copy: the 403 run moved the intents
    # under that remote's directory, where they stay (intents remember their remote).
    echoed = dict(stores)
    shutil.copytree(filled_store, machine.base / "store-daemon-keys-moto")
    stores["keys"] = machine.base / "store-daemon-keys-moto"
    run("keys", "moto", remotes.moto, "uploaded")
    _assert_no_leak(machine)  # the daemon.log files are under the machine's directory
    for kind, (_, access) in creds.items():
        assert remotes.e403.saw(f"Credential={access}/"), kind
        assert "[redacted]" in _log(echoed[kind]), f"{kind}: the echo never came back to the daemon"


# ---------------------------------------------------------------------- commands


def test_sync_config_show_and_doctor_leak_no_credential(machine: Machine, remotes: Remotes,
                                                        filled_store: Path) -> None:
    """``kache sync`` (success against moto; failure on 403, 500, an unreachable
    endpoint, a bucket that does not exist, an endpoint that is not a URL; plain and
    --json), ``kache config show`` and ``kache doctor`` (plain and --json), with each kind
    of credential: no marker in any output or file, and the echoed ones show
    ``[redacted]`` where the access key came back."""
    machine.configure(remotes.dead, remotes.bucket)  # overridden below by KACHE_S3_*
    remote = {"moto": (remotes.moto, remotes.bucket), "403": (remotes.e403.url, remotes.bucket),
              "500": (remotes.e500.url, remotes.bucket), "unreachable": (remotes.dead, remotes.bucket),
              "no-such-bucket": (remotes.moto, "kache-no-such-bucket"),
              "bad-endpoint": ("not a url", remotes.bucket)}
    creds = {"keys": KEYS, "profile": PROFILE_ONLY, "aws-env": AWS_ONLY}
    plan = [  # (command, remote, credentials)
        ("sync", "moto", "keys"), ("sync --json", "moto", "profile"), ("sync", "403", "keys"),
        ("sync --json", "403", "aws-env"), ("sync --json", "500", "keys"), ("sync", "unreachable", "profile"),
        ("sync --json", "no-such-bucket", "keys"), ("sync", "bad-endpoint", "keys"),
        ("doctor", "403", "keys"), ("doctor --json", "403", "profile"),
        ("config show", "moto", "keys"), ("config show --json", "moto", "keys"),
    ]
    runs: list[tuple[str, list[str], dict[str, str]]] = []
    for i, (command, name, kind) in enumerate(plan):
        endpoint, bucket = remote[name]
        store = machine.base / f"store-cmd-{i}"
        shutil.copytree(filled_store, store)
        env = machine.environ(creds[kind], KACHE_CACHE_DIR=str(store), KACHE_S3_ENDPOINT=endpoint,
                              KACHE_S3_BUCKET=bucket, KACHE_DAEMON_AUTOSTART="0")
        runs.append((f"{command} ({name}, {kind})", command.split(), env))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip([r[0] for r in runs], pool.map(lambda r: machine.kache(*r), runs), strict=True))
    _assert_no_leak(machine)
    for label, out in results.items():
        if label.startswith("sync"):
            expected_ok = "(moto," in label
            assert (out.returncode == 0) == expected_ok, f"{label}: exit {out.returncode}\n{out.stderr}"
        if "(403," in label:
            assert "[redacted]" in out.stdout + out.stderr, f"{label}: the echo did not come back\n{out.stdout}"
    for access in (ACCESS, PROFILE_ACCESS, AWS_ACCESS):
        assert remotes.e403.saw(f"Credential={access}/")
    assert remotes.e403.saw(f"X-Amz-Security-Token: {AWS_TOKEN}")
