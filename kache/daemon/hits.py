"""Serving the ``hit`` op: a build's wrapper (or the native client) sends its rustc call,
and the daemon restores the outputs from the local store when the call is a hit.

The stores hits are served with are kept open between requests (:class:`HitStores`).
A request whose caller hung up before it was read is declined: that caller compiled by
itself.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kache.daemon.peer import elsewhere, peer_pid
from kache.daemon.remotes import Served
from kache.daemon.wire import ProtocolError, client_start, client_umask
from kache.store import layout

if TYPE_CHECKING:
    from kache.daemon.state import DaemonState
    from kache.settings import Settings
    from kache.store.store import Store

__all__ = ["Hits", "HitStores", "peer_gone"]

log = logging.getLogger("kache.daemon")


class HitStores:
    """Open connections to the index for serving hits, kept between requests: opening one
    (connect, pragmas, reading the schema) and closing it (the last connection to a WAL
    database checkpoints it) cost ~3 ms of a ~6 ms hit. One per request at a time, as
    many as requests ran at once (up to ``keep``); one whose index file was replaced
    since it opened (an index moved aside after damage) is closed, never used."""

    def __init__(self, root: str, keep: int = 8) -> None:
        self.root = root
        self.keep = keep
        self._idle: list[tuple[Store, int]] = []
        self._lock = threading.Lock()

    def _inode(self) -> int:
        try:
            return os.stat(layout.index_path(self.root)).st_ino
        except OSError:
            return -1

    def take(self) -> tuple[Store, int]:
        """A store to serve one hit with (a kept one is open, a new one opens on first
        use), and the inode of the index file in place when it was taken."""
        from kache.store.store import Store

        current = self._inode()
        while True:
            with self._lock:
                if not self._idle:
                    break
                store, inode = self._idle.pop()
            if inode == current and store.is_open:
                return store, inode
            store.close()
        return Store(self.root, create=False), current

    def give(self, store: Store, inode: int) -> None:
        """Back after a request: kept for the next one while the index file in place is
        still the one it was taken with (so its connection cannot be to one replaced
        since), else closed."""
        store.forget_verified()  # a hit stamps its own blobs in its own transaction
        if inode >= 0 and store.is_open and self._inode() == inode:
            with self._lock:
                if len(self._idle) < self.keep:
                    self._idle.append((store, inode))
                    return
        store.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for store, _ in idle:
            store.close()


class Hits:
    """The ``hit`` op of one daemon. ``record_use(served, key, crate)`` notes the use of a
    remote entry (:meth:`kache.daemon.uploads.Uploads.record_use`)."""

    def __init__(self, state: DaemonState, record_use: Callable[[Served, str, str], bool]) -> None:
        self.state = state
        self.root = state.root
        self.stores = HitStores(self.root)
        self._record_use = record_use
        self.runner_running: Callable[[], bool] = lambda: False
        """Whether the daemon's runner takes the calls declined here (set by the daemon)."""

    def close(self) -> None:
        self.stores.close()

    def serve(self, msg: dict[str, Any], conn: socket.socket | None) -> dict[str, Any]:
        """The reply to a ``hit`` request read from ``conn`` (None: not from a connection)."""
        argv, env, cwd, store = msg.get("argv"), msg.get("env"), msg.get("cwd"), msg.get("store")
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise ProtocolError("invalid request: argv: expected a non-empty list of strings")
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            raise ProtocolError("invalid request: env: expected an object of strings")
        if not (isinstance(cwd, str) and os.path.isabs(cwd)):
            raise ProtocolError("invalid request: cwd: expected an absolute path")
        settings = None
        if store is None:
            # The native client knows no settings: read the caller's, from the environment
            # it sent, and answer only for this store.
            from kache.errors import SettingsError
            from kache.settings import load_checked

            try:
                settings = load_checked(env)
                if settings.warnings or settings.caching_off:
                    # The wrapper says them, once per build, where the build's terminal is.
                    return {"ok": True, "hit": False, "why": "invalid settings"}
                if not settings["cache.daemon_hits"]:
                    return {"ok": True, "hit": False, "why": "daemon hits are off", **self._offer(settings)}
                store = settings.converted("cache.local_store")  # absolute (the schema's check), normalised
            except SettingsError:
                return {"ok": True, "hit": False, "why": "invalid settings"}
        if store != self.root:
            return {"ok": True, "hit": False, "why": "another store"}
        if conn is not None and sys.platform == "linux":
            pid = peer_pid(conn)
            # A client in a chroot or a container sharing the store names paths this
            # process sees elsewhere: restoring there would give its build other files.
            if pid is None or elsewhere(pid) is not None:
                return {"ok": True, "hit": False, "why": "another view of the files"}
        if conn is not None and peer_gone(conn):
            # The caller gave up waiting (this daemon was stopped or slow) and compiled by
            # itself: restoring now would replace its outputs and count one compile twice.
            log.info("not serving %s: the caller gave up waiting", argv[1:2])
            if settings is not None:
                _decision(argv, env, self.root, "not served by the daemon (the caller gave up)", time.monotonic())
            return {"ok": True, "hit": False, "why": "the caller gave up"}
        started = client_start(msg, time.monotonic())
        umask = client_umask(msg)
        from kache.engine.hit import serve_hit

        kept, inode = self.stores.take()
        try:
            served = serve_hit(argv, env, cwd, self.root, float(started), umask, store=kept, settings=settings,
                               on_prefetch_hit=self._prefetch_hit)
        finally:
            self.stores.give(kept, inode)
        if settings is not None:  # the native client: it cannot log, the wrapper would have
            _decision(argv, env, self.root, "local_hit (served by the daemon)" if served is not None else
                      "not served by the daemon (no hit in its store)", float(started))
        if served is None:
            return {"ok": True, "hit": False, **self._offer(settings)}
        with self.state.lock:
            self.state.hits_served += 1
        return {"ok": True, "hit": True, "stdout": served[0], "stderr": served[1]}

    def _offer(self, settings: Settings | None) -> dict[str, bool]:
        """``run``: whether the native client (whose settings were read here: not None) may
        hand the call it asked about to the daemon's runner (kache.daemon.runner)."""
        if settings is None:
            return {}
        return {"run": bool(settings["cache.daemon_misses"]) and self.runner_running()}

    def _prefetch_hit(self, key: str, crate: str, settings: Settings) -> None:
        """A hit this daemon served was the first of an entry a prefetch brought: the
        caller's remote (its settings) is in use."""
        from kache.remote import spec as spec_mod

        try:
            found = spec_mod.from_settings(settings)
            if found is not None and not found.read_only:
                served = self.state.remotes.asked(found.to_json())
                if served is not None:
                    self._record_use(served, key, crate)
        except Exception as e:  # noqa: BLE001 - bookkeeping for the remote's gc only
            log.debug("cannot note the use of %s %s: %s", crate, key[:16], e)


def _decision(argv: list[str], env: dict[str, str], store: str, outcome: str, started: float) -> None:
    """With ``KACHE_LOG=kache=debug`` in the caller's environment, the line the Python
    wrapper writes for each call (kache.wrapper._decision) in ``kache.log`` of ``store``:
    a native client writes no log of its own."""
    from kache import loglevel

    if loglevel.level(env.get("KACHE_LOG")) > loglevel.DEBUG:
        return
    from kache.engine import argv as argvmod
    from kache.engine.notices import log_line

    try:
        crate = argvmod.parse(argv).crate_name or "?"
    except Exception:  # noqa: BLE001 - an argv the daemon served or declined anyway
        crate = "?"
    ms = (time.monotonic() - started) * 1000
    log_line(store, "DEBUG", f"{crate}: {outcome} in {ms:.1f} ms", name="kache.daemon")


def peer_gone(conn: socket.socket) -> bool:
    """Whether the other end has closed the connection (EOF waiting to be read). Never
    waits: a socket with a timeout would make even a MSG_DONTWAIT recv poll first."""
    import select

    try:
        if hasattr(select, "poll"):  # any descriptor number (select() stops at 1024)
            poller = select.poll()
            poller.register(conn, select.POLLIN)
            readable = bool(poller.poll(0))
        else:  # macOS builds without poll()
            readable = bool(select.select([conn], [], [], 0)[0])
        return readable and conn.recv(1, socket.MSG_PEEK) == b""
    except ValueError:  # a descriptor select() cannot watch: assume the caller waits
        return False
    except OSError:
        return True
