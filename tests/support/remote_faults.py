"""Helpers of the remote fault and concurrency tests (tests/faults/test_remote_faults.py,
tests/faults/test_concurrency.py): an HTTP fault proxy in front of a moto S3 server,
a real ``kache daemon run`` process (optionally with fault injection), and checks of what
the remote holds.

The fault proxy (:class:`FaultProxy`) is a small threaded HTTP/1.1 server that forwards
every request to moto unless a :class:`Rule` matches it (method and a regular expression
over the request target). A rule can answer 500 itself, delay the request, cut the
response body short (the full ``Content-Length`` is sent, then the connection closes),
stall in the middle of the body, swap the body for other bytes, forward the request and
then drop the connection without a reply, or hold the request (before or after it
reached S3) until the test releases it — the test kills the daemon meanwhile.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kache.daemon import client
from kache.remote.archive import ArchiveError, import_archive
from kache.store.store import Store
from tests.support import reliability
from tests.support.daemon import pending_intents
from tests.support.env import ROOT
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, s3_client
from tests.support.waiting import wait_for
from tests.support.workspace import Workspace

INJECT_DIR = ROOT / "tests" / "faults" / "inject"
KACHE_EXE = str(Path(sys.executable).with_name("kache"))
PREFIX = "artifacts"
REMOTE_HITS = {"remote_hit", "prefetch_hit"}

# Request targets (path-style addressing: /<bucket>/<key>[?query]).
ARCHIVE = r"\.tar\.zst$"
MKEYS = r"/_mkeys/[0-9a-f]{64}\.json$"
LISTING = r"[?&]list-type=2"

# --------------------------------------------------------------------------- S3 (moto)


_bucket_seq = iter(range(1, 1 << 30))


def new_bucket(endpoint: str) -> str:
    name = f"kache-faults-{os.getpid()}-{next(_bucket_seq)}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def remote_env(endpoint: str, bucket: str) -> dict[str, str]:
    """The variables that point kache (wrapper, daemon, sync) at a bucket behind ``endpoint``.

    The wrapper never starts a daemon by itself here (the tests start and kill it), and
    waits at most 1 s for a remote check. Workspace crates compile without incremental
    (``drop``): then every compile of a key gives the same bytes on every machine, which
    these tests' oracles rely on (a fetch landing after a local compile of the same key
    orphans nothing; a store is compared blob by blob with the bucket). An incremental
    compile is not byte-reproducible; tests/e2e/test_incremental_snapshots.py covers it."""
    return {"KACHE_S3_BUCKET": bucket, "KACHE_S3_ENDPOINT": endpoint, "KACHE_S3_ACCESS_KEY": ACCESS_KEY,
            "KACHE_S3_SECRET_KEY": SECRET_KEY, "KACHE_DAEMON_AUTOSTART": "0",
            "KACHE_REMOTE_CHECK_TIMEOUT_MS": "1000", "KACHE_INCREMENTAL": "drop"}


@dataclass
class RemoteState:
    """What a bucket holds under the prefix, every archive checked as a fresh machine would."""

    archives: dict[str, str] = field(default_factory=dict)
    """key → crate of every archive that imports cleanly (complete and valid)."""
    invalid: list[str] = field(default_factory=list)
    """Archives that do not import (partial, damaged): never acceptable on the remote."""
    announced: set[str] = field(default_factory=set)
    """Keys listed in some ``_mkeys`` object whose archive is valid."""
    dangling: list[str] = field(default_factory=list)
    """Keys announced in ``_mkeys`` whose archive is missing or invalid."""

    def complete(self, key: str) -> bool:
        return key in self.archives and key in self.announced


def remote_state(endpoint: str, bucket: str) -> RemoteState:
    """Download every object in the bucket (straight from moto) and import each archive into
    a scratch store: what another machine would get."""
    s3c = s3_client(endpoint)
    names = []
    for page in s3c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        names += [o["Key"] for o in page.get("Contents", []) or []]
    state = RemoteState()
    mkeys: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kache-remote-check-") as tmp:
        store = Store(tmp)
        try:
            for name in names:
                if "/_mkeys/" in name:
                    mkeys += [i["key"] for i in json.loads(s3c.get_object(Bucket=bucket, Key=name)["Body"].read())]
                    continue
                crate, base = name.split("/")[-2:]
                key = base.removesuffix(".tar.zst")
                data = s3c.get_object(Bucket=bucket, Key=name)["Body"].read()
                try:
                    import_archive(store, data, expected_key=key, expected_crate=crate, name=name)
                except ArchiveError as e:
                    state.invalid.append(f"{name}: {e}")
                else:
                    state.archives[key] = crate
            assert store.check(verify_hashes=True) == []
        finally:
            store.close()
    state.announced = {k for k in mkeys if k in state.archives}
    state.dangling = sorted({k for k in mkeys if k not in state.archives})
    return state


# --------------------------------------------------------------------------- the fault proxy


@dataclass
class Rule:
    """What the proxy does to the requests it matches.

    ``action``: ``500`` (answer an S3 InternalError, S3 never sees it), ``delay`` (wait
    ``seconds``, then forward), ``truncate`` (forward; send the full Content-Length but
    half the body, then close), ``stall`` (the same, but wait ``seconds`` before closing),
    ``swap`` (forward; replace a 200 body by ``body(path)``, without checksum headers),
    ``close`` (forward, then close without a reply), ``hold`` (signal :attr:`FaultProxy.held`
    and wait for :attr:`FaultProxy.release` before closing; S3 never sees the request),
    ``hold-reply`` (the same after forwarding: S3 stored it, the reply never comes).
    ``times``: how many matching requests it acts on (None: all).
    """

    action: str
    method: str = "*"
    path: str = ""
    times: int | None = None
    seconds: float = 0.0
    body: Callable[[str], bytes] | None = None
    hits: int = 0


class FaultProxy:
    """An HTTP proxy in front of ``upstream`` (see the module docstring). Thread-safe."""

    def __init__(self, upstream: str) -> None:
        u = urllib.parse.urlsplit(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.rules: list[Rule] = []
        self.fired: list[tuple[str, str, str]] = []
        """(action, method, target) of every request a rule acted on."""
        self.lock = threading.Lock()
        self.held = threading.Event()
        self.release = threading.Event()
        handler = type("Handler", (_ProxyHandler,), {"proxy": self})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, action: str, method: str = "*", path: str = "", **kw: object) -> Rule:
        rule = Rule(action, method, path, **kw)  # type: ignore[arg-type]
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Back to a plain pass-through proxy (anything held is let go)."""
        with self.lock:
            self.rules.clear()
        self.release.set()

    def count(self, action: str | None = None) -> int:
        with self.lock:
            return sum(1 for a, _, _ in self.fired if action is None or a == action)

    def match(self, method: str, target: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.method not in ("*", method) or not re.search(rule.path, target):
                    continue
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                rule.hits += 1
                self.fired.append((rule.action, method, target))
                return rule
        return None

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "expect", "proxy-connection"}


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            send = body if body or self.command in ("PUT", "POST") else None
            conn.request(self.command, self.path, body=send, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _reply(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes,
               length: int | None = None) -> None:
        self.send_response_only(status, reason)
        for k, v in headers:
            if k.lower() not in _HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            pass  # the client closed or reset the connection between two requests

    def _handle(self) -> None:
        try:
            self._serve()
        except OSError:
            self.close_connection = True  # the client went away (killed, or gave up)

    def _serve(self) -> None:
        body = self._read_body()
        rule = self.proxy.match(self.command, self.path)
        action = rule.action if rule is not None else "pass"
        if action == "500":
            err = b"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>injected</Message></Error>"
            self._reply(500, "Internal Server Error", [("Content-Type", "application/xml")], err)
            if self.command != "HEAD":
                self.wfile.write(err)
            return
        if action == "hold":
            self.proxy.held.set()
            self.proxy.release.wait(120)
            self._drop()
            return
        if action == "delay" and rule is not None:
            time.sleep(rule.seconds)
        status, reason, headers, data = self._forward(body)
        if action == "hold-reply":
            self.proxy.held.set()
            self.proxy.release.wait(120)
            self._drop()
            return
        if action == "close":
            self._drop()
            return
        if action == "swap" and rule is not None and rule.body is not None and status == 200:
            data = rule.body(self.path)
            headers = [(k, v) for k, v in headers
                       if not k.lower().startswith("x-amz-checksum") and k.lower() not in ("etag", "content-md5")]
        if self.command == "HEAD":
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
            self._reply(status, reason, headers, b"", length)
            return
        self._reply(status, reason, headers, data)
        if action in ("truncate", "stall") and rule is not None and len(data) > 1:
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            if action == "stall":
                time.sleep(rule.seconds)
            self._drop()
            return
        self.wfile.write(data)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _handle

    def log_message(self, *args: object) -> None:
        pass


# --------------------------------------------------------------------------- the daemon


class DaemonProc:
    """``kache daemon run`` as a real process over one store; killed or stopped by the test.

    ``faults`` (a ``KACHE_TEST_FAULTS`` spec) loads tests/faults/inject/sitecustomize.py
    into it; the faults that fired are then in :meth:`fired`."""

    def __init__(self, env: dict[str, str], log_dir: Path, faults: str = "") -> None:
        self.env = {**os.environ, **env, "KACHE_DAEMON_IDLE_TIMEOUT": "300"}
        self.root = self.env["KACHE_CACHE_DIR"]
        log_dir.mkdir(parents=True, exist_ok=True)
        n = len(list(log_dir.glob("daemon-*.out")))
        self.out = log_dir / f"daemon-{n}.out"
        self.fault_log = log_dir / f"faults-{n}.log"
        if faults:
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(INJECT_DIR), self.env.get("PYTHONPATH", "")) if p)
            self.env["KACHE_TEST_FAULTS"] = faults
            self.env["KACHE_TEST_FAULTS_LOG"] = str(self.fault_log)
        with open(self.out, "wb") as f:
            self.proc = subprocess.Popen([KACHE_EXE, "daemon", "run"], env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=f, stderr=subprocess.STDOUT, cwd="/")
        started.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict | None:
        return client.request(self.root, {"op": "status"}, timeout=1.0)

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(lambda: self.proc.poll() is not None or self.status() is not None, timeout, "the daemon to answer",
                 interval=0.1)
        assert self.proc.poll() is None, f"the daemon exited ({self.proc.returncode}):\n{self.log()}"

    def wait_exit(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if "kache fault injection: cannot install" in self.log() or time.monotonic() > deadline:
                raise AssertionError(f"the daemon did not exit within {timeout:g}s:\n{self.log()}")
            time.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, counted as an injected fault."""
        os.kill(self.pid, signal.SIGKILL)
        reliability.count("faults injected")
        assert self.proc.wait(30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def fired(self) -> list[str]:
        """The fault specs that fired in this process (counted as injected faults once each)."""
        if not self.fault_log.exists():
            return []
        return [line.split(" ", 1)[1] for line in self.fault_log.read_text().splitlines() if " " in line]

    def log(self) -> str:
        text = self.out.read_text(errors="replace") if self.out.exists() else ""
        return text[-6000:]


started: list[DaemonProc] = []
"""Every daemon started, for the ``daemons`` fixture to stop."""


# --------------------------------------------------------------------------- machines, stores


def intents(store: Path) -> set[str]:
    """Keys with an upload intent in the store."""
    return {p.name.split(".", 1)[0] for p in pending_intents(store)}


def store_keys(store: Path) -> dict[str, str]:
    """key → crate of the store's entries."""
    s = Store(str(store))
    try:
        return {e.key: e.crate_name for e in s.entries()}
    finally:
        s.close()


def store_problems(store: Path) -> list[str]:
    s = Store(str(store))
    try:
        return s.check(verify_hashes=True)
    finally:
        s.close()


def orphans(store: Path) -> dict[str, bytes]:
    """The store's unreferenced blobs: path → content."""
    s = Store(str(store))
    try:
        paths = s.integrity.orphan_blobs()
    finally:
        s.close()
    return {p: Path(p).read_bytes() for p in paths}


def assert_whole(store: Path) -> None:
    """``Store.check(verify_hashes=True)`` finds nothing: no damaged or missing blob, no
    orphan (a key recorded twice, from two target dirs or machines, stores the same
    normalised ``.d``), and no blob file whose content is not its name."""
    assert store_problems(store) == []
    assert damaged_blobs(store) == []


def damaged_blobs(store: Path) -> list[str]:
    """Blob files (referenced or not) whose content is not what their name says."""
    from kache.store.blobs import hash_file

    return [str(p) for p in sorted((store / "store").glob("*/*")) if hash_file(str(p))[0] != p.name]


def copy_store(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    return dest


def retarget_intents(store: Path, endpoint: str, bucket: str) -> None:
    """Point a copied store's upload intents at another remote, as if the build that left
    them had asked for that one (intents remember their remote: kache.daemon.remotes)."""
    from kache import settings as settings_mod
    from kache.daemon import client
    from kache.remote import spec as spec_mod

    spec = spec_mod.from_settings(settings_mod.load({**remote_env(endpoint, bucket), "HOME": str(store)}))
    assert spec is not None
    for path in pending_intents(store):
        key, _, crate = path.name.partition(".")
        assert client.write_intent(store, key, crate, spec)
        if path.parent.name != spec.queue_id:
            path.unlink()


def build(ws: Workspace, timeout: float = 180, **extra: str) -> subprocess.CompletedProcess[str]:
    """``cargo build`` through kache that must succeed within ``timeout`` (counted like
    :meth:`Workspace.cargo`); the hang guard is a timeout, never a timing assertion."""
    reliability.count("builds run")
    try:
        out = subprocess.run(["cargo", "build", "--offline"], cwd=ws.path, env={**os.environ, **ws.env, **extra},
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        reliability.count("builds failed")
        raise AssertionError(f"cargo build did not finish within {timeout:g}s") from None
    if out.returncode != 0:
        reliability.count("builds failed")
        raise AssertionError(f"cargo build failed:\n{out.stderr}")
    return out
