"""The daemon: one process, a few threads, one Unix socket (see :mod:`kache.daemon.wire`).

This module is the wiring: :class:`Daemon` binds the socket, runs the accept loop,
reads each connection's requests and hands each op to the part that holds it, and
:func:`run` is what ``kache daemon run`` calls. The parts:

- :mod:`kache.daemon.state`: what they share (one lock, the counters, the remotes);
- :mod:`kache.daemon.hits`: the ``hit`` op (a build's rustc call served from the store);
- :mod:`kache.daemon.fetch`: the ``fetch`` and ``prefetch`` ops;
- :mod:`kache.daemon.uploads`: the ``upload`` and ``used`` ops, the queue and intents;
- :mod:`kache.daemon.lifecycle`: the pid file, signals, stand-by and take-over,
  re-executing on a change, the store's upkeep (gc, the stats fold);
- :mod:`kache.daemon.logs`: the log file, its level and the redaction of secrets;
- :mod:`kache.daemon.options`: the knobs that are not settings (tests shorten them).

Threads:

- the *accept loop* (the thread that called :meth:`Daemon.serve`): accepts connections
  with a short timeout, and between two accepts does the housekeeping: scan upload
  intents (at start and every 30 s), requeue uploads whose retry time came, check
  whether kache's code or the config files changed (every ~10 s), check the idle
  timeout, start gc or the stats fold when due;
- one short-lived thread per connection, which reads request lines and answers them;
- ``cache.s3_concurrency`` upload workers fed by a queue, and one that records uses of
  remote entries;
- one thread per remote fetch (a reply waits for it at most ``budget_ms``) and per
  prefetch.

Stopping. The daemon exits after ``cache.daemon_idle_timeout_secs`` without requests
or jobs (0: never; a service never idles out). SIGTERM, SIGINT and the ``stop`` op end
it cleanly: the replies under way are finished, uploads not done stay as intents on
disk, the socket and the pid file are removed. The socket is bound with umask 077 and
chmod 0600.

Remotes. The remote follows the build: every request that touches one names it (its
``remote`` field, a :mod:`kache.remote.spec` with the build's credentials), and the
daemon serves each remote its builds ask for and no other (:mod:`kache.daemon.remotes`).
Upload intents remember theirs under ``uploads/<queue id>/`` (place and access). The
daemon's own settings choose only its store, limits and log; ``kache daemon start
--from-build`` (what the wrapper runs) passes it a copy of the environment without
cargo's variables and without the variables that choose a remote (see
:func:`kache.daemon.control.daemon_env`).

Remote calls go through :class:`kache.remote.s3.Remote` (``upload_entry``,
``fetch_by_mkey``, ``record_use``) and :func:`kache.remote.sync.sync`, imported inside
functions; tests inject stand-ins through :class:`DaemonOptions`' ``remote_factory``
(:func:`kache.daemon.options.stand_in`: one stand-in for every remote) and ``sync``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kache import __version__
from kache.daemon import client, wire
from kache.daemon.fetch import Fetches, warm_remote_imports
from kache.daemon.hits import Hits
from kache.daemon.lifecycle import (
    GC_CHECK_SECS,
    PACKAGE_DIR,
    TAKE_OVER_TRIES,
    AlreadyRunning,
    Changes,
    PidFile,
    Signals,
    Upkeep,
    is_service,
    reexec,
    stand_by,
    take_over,
)
from kache.daemon.logs import DaemonLog
from kache.daemon.options import DaemonOptions
from kache.daemon.remotes import Remotes, default_factory
from kache.daemon.runner import Runner
from kache.daemon.runner import supported as runner_supported
from kache.daemon.state import DaemonState
from kache.daemon.uploads import Uploads
from kache.daemon.wire import ProtocolError
from kache.errors import KacheError
from kache.remote import spec as spec_mod
from kache.store import layout

if TYPE_CHECKING:
    from kache.settings import Settings

__all__ = ["Daemon", "run"]

log = logging.getLogger("kache.daemon")

MAX_CONNECTIONS = 64

Op = Callable[[dict[str, Any], socket.socket], dict[str, Any]]
"""An op's handler: the request and the connection it came on → the reply."""


class Daemon:
    """One daemon over one local store. :meth:`serve` runs it until it stops.

    ``options`` (:class:`DaemonOptions`) say where its remotes come from, whether it
    re-executes itself on a change of code or config, and its intervals (tests shorten
    them). ``foreground`` also logs to stderr; a ``service`` never idles out.
    """

    # DaemonOptions is frozen: one shared default instance is safe.
    def __init__(self, settings: Settings, options: DaemonOptions = DaemonOptions(), *,  # noqa: B008
                 foreground: bool = True, service: bool = False) -> None:
        self.settings = settings
        self.options = options
        self.foreground = foreground
        self.service = service
        """Run by a service manager: never idles out (re-executes with ``--service``)."""
        self.manager: dict[str, str] | None = None
        """Which manager runs it (``kache daemon restart`` goes through it), when a service."""
        if service:
            from kache.daemon.service import manager_of_self

            self.manager = manager_of_self()
        self.root = os.path.abspath(str(settings.local_store))
        self.socket_path = client.socket_path(self.root)
        self.log_path = layout.log_path(self.root)
        self.idle_timeout = 0.0 if service else float(settings["cache.daemon_idle_timeout_secs"] or 0)
        self.concurrency = max(1, int(settings["cache.s3_concurrency"] or 1))
        self.pid = os.getpid()
        self.started = time.time()
        self.restart_reason: str | None = None
        """Why the daemon stopped to re-execute itself (code or config changed), if it did."""
        self.ready = threading.Event()
        """Set once the socket accepts requests (for tests and ``start --wait``)."""

        self.logs = DaemonLog(self.log_path, settings.env)
        remote_factory = options.remote_factory
        if remote_factory is None:
            remote_factory = default_factory(self.concurrency, int(settings["cache.compression_level"] or 3),
                                             wire.FETCH_MAX_MS)
        self.remotes = Remotes(remote_factory, on_secrets=self.logs.redact.add, env=settings.env)
        self.state = DaemonState(self.root, self.remotes)
        self.uploads = Uploads(self.state, options, self.concurrency, spec_mod.from_settings(settings))
        self.fetches = Fetches(self.state, options, self.concurrency, self.uploads.record_use)
        self.hits = Hits(self.state, self.uploads.record_use)
        self.runner: Runner | None = None
        """The runner of the calls it declines (kache.daemon.runner), when it has one."""
        if runner_supported() and settings["cache.daemon_misses"]:
            self.runner = Runner(self.root, self.log_path)
            self.hits.runner_running = self.runner.running
        self.pid_file = PidFile(layout.pid_path(self.root))
        self.changes = Changes(settings, options.watch_dir or PACKAGE_DIR)
        self.upkeep = Upkeep(settings, self.root, options.fold_bytes)
        self.signals = Signals(self.stop)
        self.ops: dict[str, Op] = {
            "status": lambda msg, conn: self.status(),
            "upload": lambda msg, conn: self.uploads.op_upload(msg),
            "fetch": lambda msg, conn: self.fetches.op_fetch(msg),
            "prefetch": lambda msg, conn: self.fetches.op_prefetch(msg),
            "stop": lambda msg, conn: {"ok": True, "stopping": True, "pid": self.pid},
            "hit": self.hits.serve,
            "used": lambda msg, conn: self.uploads.op_used(msg),
        }

        self._stop = threading.Event()
        self._stop_reason = ""
        self._conns = 0
        self._sock: socket.socket | None = None
        self._sock_ino: tuple[int, int] | None = None
        self._conn_threads: set[threading.Thread] = set()
        self._open: dict[socket.socket, bool] = {}
        """Open connections → whether one is handling a request right now."""
        self._next_scan = self._next_watch = self._next_gc = self._next_fold = 0.0

    # ------------------------------------------------------------------ start and stop

    def serve(self) -> int:
        """Run until stopped; return the exit status. Raises :class:`AlreadyRunning`."""
        old = os.umask(0o077)
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        finally:
            os.umask(old)
        self.pid_file.lock()
        try:  # `kache daemon start`'s note that it launched us: status reads the pid file now
            os.unlink(layout.tmp_path(self.root, layout.DAEMON_STARTING))
        except OSError:
            pass
        try:
            self.logs.start(self.foreground)
            self._bind()
            self.signals.install(self.options.handle_signals)
            self.uploads.start()
            if self.runner is not None and not self.runner.start():
                log.warning("the runner did not start: every miss starts kache")
            log.info("started: pid %d, kache %s, store %s, idle timeout %s; remotes as builds ask", self.pid,
                     __version__, self.root, f"{self.idle_timeout:g}s" if self.idle_timeout > 0 else "never")
            self.changes.remember()
            self.uploads.serve_own_remote()
            self.uploads.scan_intents()
            now = time.monotonic()
            self._next_scan = now + self.options.scan_interval
            self._next_watch = now + self.options.watch_interval
            self.ready.set()
            threading.Thread(target=warm_remote_imports, name="kache-warm", daemon=True).start()
            self._loop()
        finally:
            self._shutdown()
        if self.restart_reason is not None and self.options.reexec:
            reexec(self.foreground, self.service, self.options.exec_hook)
        return 0

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the daemon to stop (thread-safe); :meth:`serve` returns shortly after."""
        if not self._stop.is_set():
            self._stop_reason = reason
        self._stop.set()

    def _bind(self) -> None:
        # We hold the pid lock: a socket file left here is stale (a daemon that died).
        sock, self._sock_ino = client.listen(self.socket_path)
        sock.settimeout(self.options.accept_timeout)
        self._sock = sock

    def _loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                conn = None
            except OSError as e:
                if self._stop.is_set():
                    break
                log.warning("accept failed: %s: %s", self.socket_path, e)
                time.sleep(0.05)
                conn = None
            if conn is not None:
                self._spawn_connection(conn)
            try:
                self._housekeeping()
            except Exception:  # the loop must survive anything housekeeping meets
                log.exception("housekeeping failed")

    def _housekeeping(self) -> None:
        now = time.monotonic()
        options = self.options
        if self.remotes.new_access.is_set():  # intents waiting for this build's keys go now
            self.remotes.new_access.clear()
            self._next_scan = now
        if now >= self._next_scan:
            self._next_scan = now + options.scan_interval
            self.uploads.scan_intents()
        if now >= self._next_gc:
            self._next_gc = now + GC_CHECK_SECS
            self.upkeep.start_gc_if_over()
        if now >= self._next_fold:
            self._next_fold = now + options.fold_interval
            if not self._busy():  # the fold holds the GIL while it parses
                self.upkeep.fold_stats_if_grown()
        self.uploads.requeue_due(now)
        if self.runner is not None and not self._stop.is_set():
            self.runner.keep_up()
        if options.reexec and now >= self._next_watch:
            self._next_watch = now + options.watch_interval
            self._check_changes()
        if self.idle_timeout > 0 and not self._busy() and now - self.state.last_activity >= self.idle_timeout:
            self.stop(f"idle for {self.idle_timeout:g}s")

    def _check_changes(self) -> None:
        reason = self.changes.reason()
        if reason is None:
            return
        self.restart_reason = reason
        log.info("%s: restarting", reason)
        self.stop(f"{reason}; re-executing")

    def _busy(self) -> bool:
        with self.state.lock:
            return bool(self.state.active or self._conns or self.uploads.busy())

    def _shutdown(self) -> None:
        self._stop.set()
        reason = self._stop_reason or "stopping"
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            if self._sock_ino is not None:
                client.unlink_if_same(self.socket_path, self._sock_ino)
        with self.state.lock:  # idle connections end now; the replies under way are finished
            idle = [c for c, handling in self._open.items() if not handling]
        for c in idle:
            try:
                c.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        deadline = time.monotonic() + wire.FETCH_MAX_MS / 1000 + 1.0
        for t in list(self._conn_threads):
            t.join(max(0.0, deadline - time.monotonic()))
        if self.runner is not None:
            self.runner.stop()  # it exits once the calls it runs have ended
        self.uploads.stop(timeout=2.0)
        self.remotes.close()
        self.hits.close()
        self.signals.restore()
        with self.state.lock:
            left = len(self.uploads.pending)
        if self.logs.active:
            log.info("stopped (%s)%s", reason, f"; {left} upload(s) left as intents" if left else "")
        self.pid_file.release()  # last: once the lock is free, the daemon is gone
        self.logs.stop()

    # ------------------------------------------------------------------ connections

    def _spawn_connection(self, conn: socket.socket) -> None:
        with self.state.lock:
            busy = self._conns >= MAX_CONNECTIONS
            if not busy:
                self._conns += 1
        self.state.touch()
        if busy:
            try:
                conn.settimeout(0.1)
                conn.sendall(wire.reply_line({"ok": False, "error": f"daemon busy: {MAX_CONNECTIONS} connections open: "
                                                          "try again"}))
            except OSError:
                pass
            conn.close()
            return
        t = threading.Thread(target=self._serve_connection, args=(conn,), name="kache-conn", daemon=True)
        self._conn_threads.add(t)
        t.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        lock = self.state.lock
        with lock:
            self._open[conn] = False
        try:
            if self._stop.is_set():
                return
            pending = bytearray()
            while True:
                try:
                    line = wire.read_line(conn, pending)
                except (OSError, ValueError):
                    break
                if not line:
                    break
                body = line[:-1] if line.endswith(b"\n") else line
                if len(body) > wire.MAX_LINE:
                    self._send(conn, {"ok": False, "error": f"invalid request: the line is longer than "
                                                            f"{wire.MAX_LINE} bytes"})
                    _drain_and_close(conn)
                    break
                self.state.touch()
                with lock:
                    self._open[conn] = True
                reply, close, op = self._handle(body, conn)
                sent = self._send(conn, reply)
                with lock:
                    self._open[conn] = False
                if op == "stop" and reply.get("ok"):
                    self.stop("stop requested")
                if close or not sent:
                    _drain_and_close(conn)
                    break
        except Exception:  # a connection must never take the daemon down
            log.exception("connection failed")
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with lock:
                self._conns -= 1
                self._open.pop(conn, None)
            self.state.touch()
            self._conn_threads.discard(threading.current_thread())

    def _send(self, conn: socket.socket, reply: dict[str, Any]) -> bool:
        try:
            conn.sendall(wire.reply_line(reply))
            return True
        except OSError:
            return False

    def _handle(self, body: bytes, conn: socket.socket) -> tuple[dict[str, Any], bool, str | None]:
        """The reply to one line read from ``conn``, whether to close the connection after
        it, and the op."""
        try:
            msg = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            return {"ok": False, "error": "invalid request: the line is not UTF-8"}, True, None
        except (ValueError, RecursionError) as e:
            why = str(e) if isinstance(e, ValueError) else "nested too deeply"
            return {"ok": False, "error": f"invalid request: not JSON: {why}"}, True, None
        if not isinstance(msg, dict):
            return {"ok": False, "error": f"invalid request: expected a JSON object, got {type(msg).__name__}"}, \
                True, None
        if wire.too_deep(msg, wire.MAX_DEPTH):
            # Whether json gives up first depends on the thread's stack: refuse by rule instead.
            return {"ok": False, "error": f"invalid request: nested deeper than {wire.MAX_DEPTH} levels"}, True, None
        v = msg.get("v")
        if v != wire.VERSION or isinstance(v, bool):
            return {"ok": False, "error": f"unsupported protocol version: got {json.dumps(v, default=str)}, "
                                          f"this daemon speaks {wire.VERSION}", "v": wire.VERSION}, False, None
        op = msg.get("op")
        handler = self.ops.get(op) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown op: {json.dumps(op, default=str)[:80]}: this daemon knows "
                                          f"{', '.join(wire.OPS)}"}, False, None
        log.debug("request: %s", op)
        try:
            return handler(msg, conn), False, op
        except ProtocolError as e:
            return {"ok": False, "error": str(e)}, False, op
        except Exception as e:
            log.exception("%s failed", op)
            return {"ok": False, "error": f"internal error: {op}: {type(e).__name__}: {e}"}, False, op

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The ``status`` reply (also handy in-process)."""
        state = self.state
        with state.lock:
            return {"ok": True, "pid": self.pid, "version": __version__, "protocol": wire.VERSION,
                    "started": self.started, "uptime_s": round(time.time() - self.started, 3),
                    "queue": len(self.uploads.pending), "uploads_done": state.uploads_done,
                    "uploads_failed": state.uploads_failed, "downloads": state.downloads,
                    "prefetches": state.prefetches, "hits_served": state.hits_served,
                    "last_error": state.last_error,
                    "socket": self.socket_path, "store": self.root, "remote": self._last_remote(),
                    "remotes": self._remotes_status(),
                    "log": self.log_path, "idle_timeout_s": self.idle_timeout, "service": self.service,
                    "manager": self.manager, "runner": self.runner.pid if self.runner is not None else None}

    def _remotes_status(self) -> list[dict[str, Any]]:
        """The remotes builds asked for, or that have uploads pending (under the lock)."""
        out = []
        for r in self.remotes.all():
            queued = self.uploads.queued_for(r.id)
            if r.asked or queued:
                out.append({**r.to_json(), "queue": queued})
        return out

    def _last_remote(self) -> str | None:
        """The URL of the remote a build asked for last (None before any)."""
        asked = [r for r in self.remotes.all() if r.asked]
        return max(asked, key=lambda r: r.asked).spec.url if asked else None


def _drain_and_close(conn: socket.socket) -> None:
    """Half-close, then read what the peer still sends (briefly), so it gets our reply."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(0.1)
        end = time.monotonic() + 0.2
        total = 0
        while time.monotonic() < end and total < (4 << 20):
            chunk = conn.recv(65536)
            if not chunk:
                break
            total += len(chunk)
    except OSError:
        pass




def run(settings: Settings, *, foreground: bool = True, service: bool = False) -> int:
    """Run a daemon for these settings until it stops; re-execute on code/config changes.

    Returns the exit status: 0 also when another daemon already runs (it says so on
    stdout). As a ``service``, the daemon never idles out, and one already running (a
    build started it before the service manager did) is asked to stop and replaced:
    the service is the one that stays. Raises :class:`kache.errors.KacheError` when the
    socket cannot be set up, or when a running daemon does not make way.
    """
    daemon = Daemon(settings, DaemonOptions(reexec=True), foreground=foreground, service=service)
    take_overs = 0
    while True:
        try:
            return daemon.serve()
        except AlreadyRunning as e:
            if not service:
                print(str(e), flush=True)
                return 0
            if is_service(daemon.root):
                stand_by(daemon.root, e)  # another service manager's daemon: never evict it
                continue
            if take_overs == TAKE_OVER_TRIES:  # builds keep starting daemons: let the manager retry
                raise KacheError(f"cannot start the daemon: {e}, again after {TAKE_OVER_TRIES} take-overs") from None
            take_overs += 1
            take_over(daemon.root, e)
        except OSError as e:
            raise KacheError(f"cannot start the daemon: {e.filename or daemon.socket_path}: "
                             f"{e.strerror or e}") from None
