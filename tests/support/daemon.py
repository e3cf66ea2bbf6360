"""Daemons for the tests: a fake remote, a daemon in a thread of this process, upload
intents in a store, and a stand-in daemon's accept loop."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kache.daemon import client
from kache.daemon.server import Daemon
from kache.remote.spec import RemoteSpec
from kache.store.store import Store
from tests.support.entries import add_seeded_entry

FAKE = RemoteSpec("fake")
"""The remote the requests of these tests name (the daemon's stand-in serves every one)."""
FAKE_DOC = FAKE.to_json()
REAL_REMOTES: Any = object()
"""``start_daemon(remote=REAL_REMOTES)``: the daemon makes real remotes (no stand-in)."""
REAL_REMOTES: Any = object()
"""``start_daemon(remote=REAL_REMOTES)``: the daemon makes real remotes (no stand-in)."""


def pending_intents(root: str | Path) -> list[Path]:
    """Every upload intent waiting in a store, whatever its remote."""
    uploads = Path(root) / "uploads"
    found = [p for p in uploads.glob("*/*") if p.name != "remote.json"] if uploads.is_dir() else []
    return sorted(found + [p for p in (uploads.iterdir() if uploads.is_dir() else []) if p.is_file()])


def intents(root: str | Path, spec: RemoteSpec = FAKE) -> list[str]:
    """The upload intents waiting for ``spec``'s remote (``remote.json`` left out)."""
    folder = Path(root) / "uploads" / spec.queue_id
    return sorted(n for n in (os.listdir(folder) if folder.is_dir() else []) if n != "remote.json")


class FakeRemote:
    """Stands in for kache.remote.s3.Remote: records uploads, serves fetches from a table."""

    url = "s3://fake/artifacts"

    def __init__(self) -> None:
        self.uploaded: list[str] = []
        self.used: list[tuple[str, str]] = []
        self.fail_uploads = False
        self.upload_delay = 0.0
        self.entries: dict[str, list[tuple[str, str]]] = {}
        """mkey → [(crate, seed)] the remote holds; a fetch imports them into the store."""
        self.fetch_delay = 0.0
        """Seconds spent before each import (ignoring the deadline: a slow remote)."""
        self.fetch_calls: list[tuple[str, str, float]] = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        """Set when the test ends: a slow fetch still running gives up."""

    def record_use(self, crate: str, key: str) -> bool:
        with self.lock:
            self.used.append((crate, key))
        return True

    def upload_entry(self, store: Store, key: str) -> bool:
        time.sleep(self.upload_delay)
        if self.fail_uploads:
            raise RuntimeError("remote upload failed: bucket fake: 503 Slow Down")
        with self.lock:
            self.uploaded.append(key)
        return True

    def fetch_by_mkey(self, store: Store, crate: str, mkey: str, *, limit: int = 3, deadline: float | None = None,
                      origin: str = "remote") -> list[str]:
        self.fetch_calls.append((crate, mkey, deadline or 0.0))
        imported = []
        for c, seed in self.entries.get(mkey, [])[:limit]:
            if self.closed.wait(self.fetch_delay):
                break
            imported.append(add_seeded_entry(store.root, c, seed, mkey=mkey))
        return imported


class Running:
    """A daemon running in a thread of this process."""

    def __init__(self, daemon: Daemon, thread: threading.Thread, result: dict[str, Any]) -> None:
        self.daemon = daemon
        self.thread = thread
        self.result = result
        self.root = daemon.root

    def request(self, message: dict[str, Any], timeout: float = 2.0) -> dict[str, Any] | None:
        return client.request(self.root, message, timeout=timeout)

    def status(self) -> dict[str, Any]:
        reply = self.request({"op": "status"})
        assert reply is not None and reply["ok"] is True, reply
        return reply

    def stop(self) -> None:
        self.daemon.stop("test over")
        self.thread.join(10)
        assert not self.thread.is_alive()


def start_in_thread(daemon: Daemon) -> Running:
    """Serve ``daemon`` in a thread of this process; returns once it is ready (or has
    stopped, or 5 s passed). What ``serve()`` returned or raised lands in ``result``."""
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
    return Running(daemon, thread, result)


def serve_lines(server: socket.socket, answer: Callable[[socket.socket, bytes], None]) -> None:
    """A stand-in daemon's accept loop: for each connection on the listening ``server``,
    read up to the first newline (or the end) and let ``answer`` reply; returns once
    the server socket is closed."""
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            answer(conn, data)
