"""A miss that races the daemon's prefetch: the wrapper looked up locally and missed,
then the prefetch imported the entry, then the wrapper's remote check ran. The fetch
finds the entry already local and reports nothing new, so the wrapper must look up
again instead of compiling (this was an intermittent miss in test_daemon_e2e).

The real daemon cannot be made to land its prefetch in that exact moment, so a stand-in
speaks the daemon's socket protocol: on ``fetch`` it imports the entry (a real archive
into the real store) and answers that it imported nothing. Real cargo and rustc."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kache.daemon.client import socket_path
from kache.remote.archive import import_archive, pack_entry
from kache.store.store import Store
from tests.support.daemon import serve_lines
from tests.support.workspace import Workspace, outcomes

pytestmark = pytest.mark.e2e


class LateDaemon:
    """Answers each request on the store's socket; a ``fetch`` for ``crate`` first
    imports ``archive`` (the prefetch landing) and then reports nothing imported."""

    def __init__(self, store_root: Path, crate: str, archive: bytes, origin: str = "prefetch") -> None:
        self.root, self.crate, self.archive, self.origin = store_root, crate, archive, origin
        self.ops: list[str] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(socket_path(store_root))
        self.server.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        serve_lines(self.server, self._answer)

    def _answer(self, conn: socket.socket, data: bytes) -> None:
        for line in data.splitlines():
            msg = json.loads(line)
            self.ops.append(f"{msg['op']}:{msg.get('crate', '')}")
            reply: dict = {"ok": True}
            if msg["op"] == "fetch":
                if msg["crate"] == self.crate:
                    store = Store(str(self.root))
                    try:
                        import_archive(store, self.archive, origin=self.origin)
                    finally:
                        store.close()
                reply["imported"] = []
            elif msg["op"] == "hit":
                reply["hit"] = False
            try:
                conn.sendall((json.dumps(reply) + "\n").encode())
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def late_daemon() -> Iterator[list[LateDaemon]]:
    started: list[LateDaemon] = []
    yield started
    for d in started:
        d.close()


# A prefetch landing first is the prefetch's hit; a fetch whose reply was lost (its daemon
# killed after the import: tests/faults/test_remote_faults.py) is still the remote's hit.
@pytest.mark.parametrize("origin,outcome", [("prefetch", "prefetch_hit"), ("remote", "remote_hit")])
def test_a_prefetch_landing_during_the_remote_check_is_a_hit(
        origin: str, outcome: str, machines: Callable[[str], Workspace], late_daemon: list[LateDaemon]) -> None:
    a = machines("machine-a")
    a.build(KACHE_INCREMENTAL="drop")
    store = Store(str(a.store))
    try:
        [entry] = store.entries("kc_core")
        archive = pack_entry(store, entry.key)
    finally:
        store.close()

    b = machines("machine-b")
    b.env["KACHE_S3_BUCKET"] = "kache-test"  # a remote: the wrapper asks "its daemon" on a miss
    b_store = Store(str(b.store))
    b_store.open()
    b_store.close()
    late_daemon.append(LateDaemon(b.store, "kc_core", archive, origin))
    b.take_rustc_runs()
    b.build(KACHE_INCREMENTAL="drop")
    evs = outcomes(b.take_events())
    assert late_daemon[0].ops.count("fetch:kc_core") == 1, late_daemon[0].ops
    assert evs["kc_core"] == outcome, evs  # found by the look-up after the check
    assert "kc_core" not in b.take_rustc_runs()
    b.verify_app()
    assert not os.path.exists(b.store / "daemon.pid")  # no real daemon was started
