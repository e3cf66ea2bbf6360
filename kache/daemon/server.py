"""The daemon: one process, a few threads, one Unix socket (see :mod:`kache.daemon.protocol`).

Threads:

- the *accept loop* (the thread that called :meth:`Daemon.serve`): accepts connections
  with a short timeout, and between two accepts does the housekeeping: scan upload
  intents (at start and every 30 s), requeue uploads whose retry time came, check
  whether kache's code or the config files changed (every ~10 s), check the idle timeout;
- one short-lived thread per connection, which reads request lines and answers them;
- ``cache.s3_concurrency`` upload workers fed by a queue, which also record uses of
  remote entries;
- one thread per remote fetch (a reply waits for it at most ``budget_ms``) and per
  prefetch.

Lifecycle. ``<store>/daemon.pid`` holds the pid under an exclusive ``flock`` for the
daemon's whole life, so two daemons cannot both run: a second one logs nothing and
returns at once, saying which pid runs. The socket is bound with umask 077 and chmod
0600. The daemon exits after ``cache.daemon_idle_timeout_secs`` without requests or
jobs (0: never). SIGTERM, SIGINT and the ``stop`` op end it cleanly: the replies under
way are finished, uploads not done stay as intents on disk, the socket and the pid
file are removed. When the kache package's ``.py`` files or the config files change, it
does the same and then re-executes itself (:mod:`kache.selfexec`), so
a service or a long-lived daemon always runs the installed code and settings.

Remotes. The remote follows the build: every request that touches one names it (its
``remote`` field, a :mod:`kache.remote.spec` with the build's credentials), and the
daemon serves each remote its builds ask for and no other (:mod:`kache.daemon.remotes`).
Upload intents remember theirs under ``uploads/<queue id>/`` (place and access). The daemon's own settings
choose only its store, limits and log; ``kache daemon start --from-build`` (what the
wrapper runs) passes it a copy of the environment without cargo's variables and
without the variables that choose a remote (see :func:`kache.daemon.control.daemon_env`).

Logging goes to ``<store>/daemon.log`` (rotated at 4 MiB, two old files kept) and, in
the foreground, to stderr. The level comes from ``KACHE_LOG`` (``kache=debug``,
``info``, ``warn``, ``error``); the daemon logs at ``info`` when it is unset. Values of
credential variables are replaced by ``[redacted]`` in every line.

Remote calls go through :class:`kache.remote.s3.Remote` (``upload_entry``,
``fetch_by_mkey``, ``record_use``) and :func:`kache.remote.sync.sync`, imported inside
functions; tests inject stand-ins through :class:`Daemon`'s ``remote`` (one stand-in for
every remote), ``remote_factory`` and ``sync`` arguments.
"""

from __future__ import annotations

import fcntl
import json
import logging
import logging.handlers
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kache import __version__
from kache.daemon import client
from kache.daemon import protocol as P
from kache.daemon.protocol import ProtocolError
from kache.daemon.remotes import DOWN_SECS, Remotes, Served, default_factory, valid_id
from kache.errors import KacheError
from kache.remote.spec import SpecError
from kache.store import layout

if TYPE_CHECKING:
    from kache.settings import Settings
    from kache.store.store import Store

__all__ = ["Daemon", "AlreadyRunning", "run", "log_level"]

# How often the daemon checks the store against local_max_size.
GC_CHECK_SECS = 600.0
# While idle, the event log is folded into `kache stats`'s kept fold once it grew this
# much (checked this often): a stats after a long build then folds minutes, not hours.
STATS_FOLD_SECS = 60.0
STATS_FOLD_BYTES = 1 << 20

log = logging.getLogger("kache.daemon")

LOG_MAX_BYTES = 4 << 20
LOG_BACKUPS = 2
MAX_CONNECTIONS = 64
TAKE_OVER_SECS = 15.0  # how long a service waits for the daemon it replaces
TAKE_OVER_TRIES = 3  # a build may start another daemon between the stop and the start
STAND_BY_SECS = 2.0  # how often a service behind another service looks whether it is gone
DONE_MEMORY = 10_000
"""Keys uploaded lately: asked again, only their intent is removed (no second HEAD)."""
RETRY_MAX_SECS = 600.0
_AUTO: Any = object()
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AlreadyRunning(Exception):
    """Another daemon holds the pid file's lock; ``pid`` is its pid (0 when unreadable)."""

    def __init__(self, pid: int, pid_path: str) -> None:
        self.pid = pid
        self.pid_path = pid_path
        super().__init__(f"kache daemon is already running (pid {pid or '?'})")


def log_level(text: str | None) -> int:
    """The level of the ``kache`` logger from ``KACHE_LOG`` (``kache=debug``, ``info``, ...).

    A ``kache=<level>`` directive wins over a bare level; anything unreadable is ``info``.
    """
    levels = {"error": logging.ERROR, "warn": logging.WARNING, "warning": logging.WARNING,
              "info": logging.INFO, "debug": logging.DEBUG, "trace": logging.DEBUG, "off": logging.CRITICAL + 10}
    bare = named = None
    for part in (text or "").split(","):
        name, eq, value = part.strip().partition("=")
        if eq:
            if name.strip() == "kache" or name.strip().startswith(("kache.", "kache::")):
                named = levels.get(value.strip().lower(), named)
        elif name:
            bare = levels.get(name.lower(), bare)
    return named if named is not None else bare if bare is not None else logging.INFO


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are created owner-only (0600)."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


class _Redact(logging.Filter):
    """Replace every credential value in a record's message and traceback."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def add(self, secrets: list[str]) -> None:
        """Credentials a build sent: scrubbed from now on (before anything logs them)."""
        new = [s for s in secrets if len(s) >= 4 and s not in self.secrets]
        if new:
            self.secrets = self.secrets + new  # replaced whole: readers in other threads see one or the other

    def _scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "[redacted]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = self._scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._scrub(record.exc_text)
        return True


def _secret_values(env: Any) -> list[str]:
    from kache.settings import env_settings

    names = [e.name for e in env_settings() if e.secret] + ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    return [str(env[n]).strip() for n in names if env.get(n)]


class _Upload:
    """One pending upload of ``key`` to the remote ``rid``: tried ``tries`` times, next due
    at ``next_at`` (monotonic)."""

    __slots__ = ("rid", "key", "crate", "tries", "next_at", "queued", "running")

    def __init__(self, rid: str, key: str, crate: str) -> None:
        self.rid = rid
        self.key = key
        self.crate = crate
        self.tries = 0
        self.next_at = 0.0
        self.queued = False
        self.running = False


class _Flight:
    """A fetch under way; followers asking for the same cheap key wait on the same one."""

    __slots__ = ("done", "result", "before")

    def __init__(self, before: set[str]) -> None:
        self.done = threading.Event()
        self.result: list[str] = []
        self.before = before


class _HitStores:
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


class Daemon:
    """One daemon over one local store. :meth:`serve` runs it until it stops.

    The remotes are those the requests name, made by ``remote_factory(spec, for_fetch)``
    (default: :class:`kache.remote.s3.Remote`); ``remote``, for tests, is one stand-in
    used for every remote a request names (None: requests get no remote). ``sync``
    replaces :func:`kache.remote.sync.sync`. ``reexec`` lets a change of code
    or config re-execute the process (``exec_hook`` replaces ``os.execv`` in tests).
    The intervals are parameters so tests can shorten them.
    """

    def __init__(self, settings: Settings, *, foreground: bool = True, remote: Any = _AUTO,
                 remote_factory: Callable[[Any, bool], Any] | None = None,
                 sync: Callable[..., Any] | None = None, reexec: bool = False,
                 exec_hook: Callable[[list[str]], None] | None = None, handle_signals: bool | None = None,
                 scan_interval: float = P.INTENT_SCAN_SECS, watch_interval: float = 10.0,
                 retry_delay: float = 30.0, max_tries: int = P.MAX_TRIES,
                 prefetch_dedupe_secs: float = P.PREFETCH_DEDUPE_SECS, accept_timeout: float = 0.2,
                 watch_dir: str | None = None, fold_interval: float = STATS_FOLD_SECS,
                 fold_bytes: int = STATS_FOLD_BYTES, service: bool = False) -> None:
        self.settings = settings
        self.foreground = foreground
        self.service = service
        """Run by a service manager: never idles out (re-executes with ``--service``)."""
        self.root = os.path.abspath(str(settings.local_store))
        self.socket_path = client.socket_path(self.root)
        self.pid_path = layout.pid_path(self.root)
        self.log_path = layout.log_path(self.root)
        self.intents_dir = layout.uploads_dir(self.root)
        self.idle_timeout = 0.0 if service else float(settings["cache.daemon_idle_timeout_secs"] or 0)
        self.concurrency = max(1, int(settings["cache.s3_concurrency"] or 1))
        self.reexec = reexec
        self.scan_interval = scan_interval
        self.watch_interval = watch_interval
        self.retry_delay = retry_delay
        self.max_tries = max_tries
        self.prefetch_dedupe_secs = prefetch_dedupe_secs
        self.accept_timeout = accept_timeout
        self.watch_dir = watch_dir or _PACKAGE_DIR
        self.fold_interval = fold_interval
        self.fold_bytes = fold_bytes
        self._next_fold = 0.0
        self._folded: tuple[int, int] | None = None  # (inode, size) of the log when last folded
        self._fold_thread: threading.Thread | None = None
        if remote_factory is None:
            remote_factory = (default_factory(self.concurrency, int(settings["cache.compression_level"] or 3),
                                              P.FETCH_MAX_MS)
                              if remote is _AUTO else (lambda spec, for_fetch: remote))
        self._redact = _Redact(_secret_values(settings.env))
        self.remotes = Remotes(remote_factory, on_secrets=self._redact.add, env=settings.env)
        from kache.remote import spec as spec_mod

        self._own_spec = spec_mod.from_settings(settings)
        """The remote of the daemon's own settings, with its own credentials: for the intents
        of builds with the same access, and those an older kache left
        (``uploads/<key>.<crate>``, which name none). No build's request uses it unless
        that build names it."""
        self._sync_fn = sync
        self._exec_hook = exec_hook
        self._handle_signals = handle_signals

        self.pid = os.getpid()
        self.started = time.time()
        self.uploads_done = 0
        self.uploads_failed = 0
        self.downloads = 0
        self.prefetches = 0
        self.hits_served = 0
        self.last_error: str | None = None
        self.restart_reason: str | None = None
        """Why the daemon stopped to re-execute itself (code or config changed), if it did."""

        self._lock = threading.Lock()
        self._hit_stores = _HitStores(self.root)
        self._stop = threading.Event()
        self._stop_reason = ""
        self._pending: dict[str, _Upload] = {}
        self._given_up: set[str] = set()
        self._done: OrderedDict[str, None] = OrderedDict()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._flights: dict[tuple[str, str, str], _Flight] = {}
        self._current = threading.local()  # the connection whose request a thread handles
        self._prefetched: dict[tuple[str, str], float] = {}
        self._uses: queue.Queue[tuple[Served, str, str] | None] = queue.Queue()
        self._used: dict[tuple[str, str], int] = {}
        """(remote id, key) → the day (unix time // 86400) its use was last recorded."""
        self._active = 0
        self._conns = 0
        self._last_activity = time.monotonic()
        self._sock: socket.socket | None = None
        self._sock_ino: tuple[int, int] | None = None
        self._pid_fd: int | None = None
        self._workers: list[threading.Thread] = []
        self._conn_threads: set[threading.Thread] = set()
        self._open: dict[socket.socket, bool] = {}
        """Open connections → whether one is handling a request right now."""
        self._handlers: list[logging.Handler] = []
        self._saved_logger: tuple[int, bool] | None = None
        self._saved_signals: dict[int, Any] = {}
        self._code_stamp0 = 0
        self._config_stamp0: tuple[Any, ...] = ()
        self._next_scan = self._next_watch = 0.0
        self.ready = threading.Event()
        """Set once the socket accepts requests (for tests and ``start --wait``)."""

    # ------------------------------------------------------------------ lifecycle

    def serve(self) -> int:
        """Run until stopped; return the exit status. Raises :class:`AlreadyRunning`."""
        old = os.umask(0o077)
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        finally:
            os.umask(old)
        self._pid_fd = self._lock_pid_file()
        try:
            self._setup_logging()
            self._bind()
            self._install_signals()
            self._start_workers()
            log.info("started: pid %d, kache %s, store %s, idle timeout %s; remotes as builds ask", self.pid,
                     __version__, self.root, f"{self.idle_timeout:g}s" if self.idle_timeout > 0 else "never")
            self._code_stamp0 = self._code_stamp()
            self._config_stamp0 = self._config_stamp()
            self._serve_own_remote()
            self._scan_intents()
            now = time.monotonic()
            self._next_scan = now + self.scan_interval
            self._next_watch = now + self.watch_interval
            self.ready.set()
            threading.Thread(target=_warm_remote_imports, name="kache-warm", daemon=True).start()
            self._loop()
        finally:
            self._shutdown()
        if self.restart_reason is not None and self.reexec:
            self._exec()
        return 0

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the daemon to stop (thread-safe); :meth:`serve` returns shortly after."""
        if not self._stop.is_set():
            self._stop_reason = reason
        self._stop.set()

    def _lock_pid_file(self) -> int:
        for attempt in range(20):
            fd = os.open(self.pid_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                if attempt < 2:  # a status probe may hold a shared lock for a moment
                    time.sleep(0.02)
                    continue
                raise AlreadyRunning(pid, self.pid_path) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.pid_path))
            except FileNotFoundError:
                same = False
            if not same:  # the previous daemon removed it between our open and our lock
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        raise AlreadyRunning(0, self.pid_path)

    def _bind(self) -> None:
        # We hold the pid lock: a socket file left here is stale (a daemon that died).
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address, fd = client.address(self.socket_path)
        old = os.umask(0o077)
        try:
            sock.bind(address)
        finally:
            os.umask(old)
            if fd is not None:
                os.close(fd)
        os.chmod(self.socket_path, 0o600)
        st = os.stat(self.socket_path)
        self._sock_ino = (st.st_dev, st.st_ino)
        sock.listen(128)
        sock.settimeout(self.accept_timeout)
        self._sock = sock

    def _install_signals(self) -> None:
        wanted = self._handle_signals
        if wanted is None:
            wanted = threading.current_thread() is threading.main_thread()
        if not wanted:
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._saved_signals[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop(f"signal {signal.Signals(signum).name}")

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
        if self.remotes.new_access.is_set():  # intents waiting for this build's keys go now
            self.remotes.new_access.clear()
            self._next_scan = now
        if now >= self._next_scan:
            self._next_scan = now + self.scan_interval
            self._scan_intents()
        if now >= getattr(self, "_next_gc", 0.0):
            self._next_gc = now + GC_CHECK_SECS
            self._start_gc_if_over()
        if now >= self._next_fold:
            self._next_fold = now + self.fold_interval
            self._fold_stats_if_grown()
        self._requeue_due(now)
        if self.reexec and now >= self._next_watch:
            self._next_watch = now + self.watch_interval
            self._check_changes()
        if self.idle_timeout > 0 and not self._busy() and now - self._last_activity >= self.idle_timeout:
            self.stop(f"idle for {self.idle_timeout:g}s")

    def _start_gc_if_over(self) -> None:
        """Collect in a thread when the store passed local_max_size (REFERENCE §7: the
        limit holds whether or not builds run `kache gc`)."""
        if getattr(self, "_gc_thread", None) is not None and self._gc_thread.is_alive():
            return

        def run() -> None:
            from kache.store.gc import cleans_incremental, gc

            store = self._store()
            try:
                limit = self.settings.get("cache.local_max_size")
                if store.totals()["physical_bytes"] <= limit:
                    return
                report = gc(store, limit, max_age=None,
                            clean_incremental=cleans_incremental(self.settings))
                log.info("gc: store was over %d bytes: %s", limit, report.to_json())
            except Exception as e:  # noqa: BLE001 - upkeep must not kill the daemon
                log.warning("gc failed: %s", e)
            finally:
                store.close()

        self._gc_thread = threading.Thread(target=run, name="kache-gc", daemon=True)
        self._gc_thread.start()

    def _fold_stats_if_grown(self) -> None:
        """Bring ``kache stats``'s kept fold of the event log up to date in a thread, when
        nothing else runs and the log grew by ``fold_bytes`` (or rotated) since the last
        time: ``kache stats`` then folds only what came after (a full log, 100,000 events,
        costs it ~0.5 s). The fold holds the GIL while it parses (~35 ms per MiB), hence
        only while idle."""
        if self._busy() or (self._fold_thread is not None and self._fold_thread.is_alive()):
            return
        from kache.store import events

        try:
            st = os.stat(events.path(self.root))
        except OSError:
            return
        last = self._folded
        if last is not None and last[0] == st.st_ino and st.st_size - last[1] < self.fold_bytes:
            return
        self._folded = (st.st_ino, st.st_size)

        def run() -> None:
            from kache.store import stats

            try:
                stats.refresh_fold(self.root)
            except Exception as e:  # noqa: BLE001 - upkeep must not kill the daemon
                log.warning("folding the event log for kache stats failed: %s", e)

        self._fold_thread = threading.Thread(target=run, name="kache-stats", daemon=True)
        self._fold_thread.start()

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._active or self._conns
                        or any(j.queued or j.running for j in self._pending.values()))

    def _touch(self) -> None:
        self._last_activity = time.monotonic()

    def _shutdown(self) -> None:
        self._stop.set()
        reason = self._stop_reason or "stopping"
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                st = os.stat(self.socket_path)
                if (st.st_dev, st.st_ino) == self._sock_ino:
                    os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
        with self._lock:  # idle connections end now; the replies under way are finished
            idle = [c for c, handling in self._open.items() if not handling]
        for c in idle:
            try:
                c.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        deadline = time.monotonic() + P.FETCH_MAX_MS / 1000 + 1.0
        for t in list(self._conn_threads):
            t.join(max(0.0, deadline - time.monotonic()))
        for _ in self._workers:
            self._queue.put(None)
        self._uses.put(None)
        deadline = time.monotonic() + 2.0
        for t in self._workers:  # an upload cut short stays an intent; the next daemon redoes it
            t.join(max(0.0, deadline - time.monotonic()))
        self.remotes.close()
        self._hit_stores.close()
        for sig, handler in self._saved_signals.items():
            signal.signal(sig, handler)
        self._saved_signals.clear()
        with self._lock:
            left = len(self._pending)
        if self._handlers:
            log.info("stopped (%s)%s", reason, f"; {left} upload(s) left as intents" if left else "")
        if self._pid_fd is not None:  # last: once the lock is free, the daemon is gone
            try:
                os.unlink(self.pid_path)  # while we still hold the lock
            except FileNotFoundError:
                pass
            os.close(self._pid_fd)
            self._pid_fd = None
        self._teardown_logging()

    def _exec(self) -> None:
        from kache import selfexec

        argv = selfexec.command("daemon", "run", *([] if self.foreground else ["--detached"]),
                                *(["--service"] if self.service else []))
        if self._exec_hook is not None:
            self._exec_hook(argv)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, selfexec.environ())

    # ------------------------------------------------------------------ changes

    def _code_stamp(self) -> int:
        newest = 0
        for dirpath, dirnames, filenames in os.walk(self.watch_dir):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in filenames:
                if name.endswith((".py", ".json")):
                    try:
                        newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime_ns)
                    except OSError:
                        continue
        return newest

    def _config_stamp(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for f in getattr(self.settings, "files", []):
            try:
                st = os.stat(f.path)
                out.append((f.path, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((f.path, None))
        return tuple(out)

    def _check_changes(self) -> None:
        if self._code_stamp() != self._code_stamp0:
            self.restart_reason = "kache's code changed"
        elif self._config_stamp() != self._config_stamp0:
            self.restart_reason = "a config file changed"
        else:
            return
        log.info("%s: restarting", self.restart_reason)
        self.stop(f"{self.restart_reason}; re-executing")

    # ------------------------------------------------------------------ logging

    def _setup_logging(self) -> None:
        logger = logging.getLogger("kache")
        self._saved_logger = (logger.level, logger.propagate)
        redact = self._redact
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
        handler: logging.Handler = _PrivateRotatingFileHandler(
            self.log_path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
        handlers = [handler]
        if self.foreground and not _stderr_is(self.log_path):
            handlers.append(logging.StreamHandler(sys.stderr))
        for h in handlers:
            h.setFormatter(fmt)
            h.addFilter(redact)
            logger.addHandler(h)
        self._handlers = handlers
        logger.setLevel(log_level(self.settings.env.get("KACHE_LOG")))
        logger.propagate = False

    def _teardown_logging(self) -> None:
        logger = logging.getLogger("kache")
        for h in self._handlers:
            logger.removeHandler(h)
            h.close()
        self._handlers = []
        if self._saved_logger is not None:
            logger.setLevel(self._saved_logger[0])
            logger.propagate = self._saved_logger[1]

    # ------------------------------------------------------------------ remote

    def _serve_own_remote(self) -> None:
        """The remote of the daemon's own settings, with its own credentials (a service's,
        or those of the shell that ran ``kache daemon start``): the intents builds with
        the same access left are uploaded at once. No build's request is served by it
        unless that build names it."""
        if self._own_spec is None:
            return
        try:
            self.remotes.serve(self._own_spec)
        except Exception as e:  # noqa: BLE001 - a build that names it reports the problem
            log.warning("remote unavailable: %s: %s", self._own_spec.where, e)

    def _asked(self, msg: dict[str, Any]) -> Served | None:
        """The remote a request names (None: none). Raises ProtocolError for a bad one."""
        try:
            return self.remotes.asked(msg.get("remote"))
        except SpecError as e:
            raise ProtocolError(f"invalid request: {e}") from None
        except Exception as e:  # a remote that cannot be set up: said once, then no remote
            self._error(f"remote unavailable: {type(e).__name__}: {e}")
            return None

    # ------------------------------------------------------------------ connections

    def _spawn_connection(self, conn: socket.socket) -> None:
        with self._lock:
            busy = self._conns >= MAX_CONNECTIONS
            if not busy:
                self._conns += 1
        self._touch()
        if busy:
            try:
                conn.settimeout(0.1)
                conn.sendall(_line({"ok": False, "error": f"daemon busy: {MAX_CONNECTIONS} connections open: "
                                                          "try again"}))
            except OSError:
                pass
            conn.close()
            return
        t = threading.Thread(target=self._serve_connection, args=(conn,), name="kache-conn", daemon=True)
        self._conn_threads.add(t)
        t.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        with self._lock:
            self._open[conn] = False
        try:
            if self._stop.is_set():
                return
            pending = bytearray()
            while True:
                try:
                    line = _read_line(conn, pending)
                except (OSError, ValueError):
                    break
                if not line:
                    break
                body = line[:-1] if line.endswith(b"\n") else line
                if len(body) > P.MAX_LINE:
                    self._send(conn, {"ok": False, "error": f"invalid request: the line is longer than "
                                                            f"{P.MAX_LINE} bytes"})
                    _drain_and_close(conn)
                    break
                self._touch()
                with self._lock:
                    self._open[conn] = True
                self._current.conn = conn
                try:
                    reply, close, op = self._handle(body)
                finally:
                    self._current.conn = None
                sent = self._send(conn, reply)
                with self._lock:
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
            with self._lock:
                self._conns -= 1
                self._open.pop(conn, None)
            self._touch()
            self._conn_threads.discard(threading.current_thread())

    def _send(self, conn: socket.socket, reply: dict[str, Any]) -> bool:
        try:
            conn.sendall(_line(reply))
            return True
        except OSError:
            return False

    def _handle(self, body: bytes) -> tuple[dict[str, Any], bool, str | None]:
        """The reply to one line, whether to close the connection after it, and the op."""
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
        if _too_deep(msg, MAX_DEPTH):
            # Whether json gives up first depends on the thread's stack: refuse by rule instead.
            return {"ok": False, "error": f"invalid request: nested deeper than {MAX_DEPTH} levels"}, True, None
        v = msg.get("v")
        if v != P.VERSION or isinstance(v, bool):
            return {"ok": False, "error": f"unsupported protocol version: got {json.dumps(v, default=str)}, "
                                          f"this daemon speaks {P.VERSION}", "v": P.VERSION}, False, None
        op = msg.get("op")
        handler = self._OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown op: {json.dumps(op, default=str)[:80]}: this daemon knows "
                                          f"{', '.join(P.OPS)}"}, False, None
        log.debug("request: %s", op)
        try:
            return handler(self, msg), False, op
        except ProtocolError as e:
            return {"ok": False, "error": str(e)}, False, op
        except Exception as e:
            log.exception("%s failed", op)
            return {"ok": False, "error": f"internal error: {op}: {type(e).__name__}: {e}"}, False, op

    # ------------------------------------------------------------------ ops

    def status(self) -> dict[str, Any]:
        """The ``status`` reply (also handy in-process)."""
        with self._lock:
            pending = len(self._pending)
            return {"ok": True, "pid": self.pid, "version": __version__, "protocol": P.VERSION,
                    "started": self.started, "uptime_s": round(time.time() - self.started, 3),
                    "queue": pending, "uploads_done": self.uploads_done, "uploads_failed": self.uploads_failed,
                    "downloads": self.downloads, "prefetches": self.prefetches, "hits_served": self.hits_served,
                    "last_error": self.last_error,
                    "socket": self.socket_path, "store": self.root, "remote": self._last_remote(),
                    "remotes": self._remotes_status(),
                    "log": self.log_path, "idle_timeout_s": self.idle_timeout, "service": self.service}

    def _remotes_status(self) -> list[dict[str, Any]]:
        """The remotes builds asked for, or that have uploads pending (under ``_lock``)."""
        out = []
        for r in self.remotes.all():
            queued = sum(1 for j in self._pending.values() if j.rid == r.id)
            if r.asked or queued:
                out.append({**r.to_json(), "queue": queued})
        return out

    def _last_remote(self) -> str | None:
        """The URL of the remote a build asked for last (None before any)."""
        asked = [r for r in self.remotes.all() if r.asked]
        return max(asked, key=lambda r: r.asked).spec.url if asked else None

    def _op_status(self, msg: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    def _op_hit(self, msg: dict[str, Any]) -> dict[str, Any]:
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
                if not settings["cache.daemon_hits"]:
                    return {"ok": True, "hit": False, "why": "daemon hits are off"}
                store = settings.get("cache.local_store")  # absolute (the schema's check), normalised
            except SettingsError:
                return {"ok": True, "hit": False, "why": "invalid settings"}  # the wrapper reports them
        if store != self.root:
            return {"ok": True, "hit": False, "why": "another store"}
        conn = getattr(self._current, "conn", None)
        if conn is not None and _peer_gone(conn):
            # The caller gave up waiting (this daemon was stopped or slow) and compiled by
            # itself: restoring now would replace its outputs and count one compile twice.
            log.info("not serving %s: the caller gave up waiting", argv[1:2])
            return {"ok": True, "hit": False, "why": "the caller gave up"}
        now = time.monotonic()
        started = msg.get("started")
        client_ms = msg.get("client_ms")
        if (started is None and not isinstance(client_ms, bool) and isinstance(client_ms, (int, float))
                and 0 <= client_ms < 60_000):
            started = now - client_ms / 1000  # a client without CLOCK_MONOTONIC: its time before asking
        if isinstance(started, bool) or not isinstance(started, (int, float)) or not now - 60 < started <= now:
            started = now  # the client's clock start, when it is believable (CLOCK_MONOTONIC is system-wide)
        umask = msg.get("umask")
        if isinstance(umask, bool) or not isinstance(umask, int) or not 0 <= umask <= 0o777:
            umask = 0o022
        from kache.wrapper.main import serve_hit

        store, inode = self._hit_stores.take()
        try:
            served = serve_hit(argv, env, cwd, self.root, float(started), umask, store=store, settings=settings,
                               on_prefetch_hit=self._prefetch_hit)
        finally:
            self._hit_stores.give(store, inode)
        if served is None:
            return {"ok": True, "hit": False}
        with self._lock:
            self.hits_served += 1
        return {"ok": True, "hit": True, "stdout": served[0], "stderr": served[1]}

    def _prefetch_hit(self, key: str, crate: str, settings: Settings) -> None:
        """A hit this daemon served was the first of an entry a prefetch brought: the
        caller's remote (its settings) is in use."""
        from kache.remote import spec as spec_mod

        try:
            found = spec_mod.from_settings(settings)
            if found is not None and not found.read_only:
                served = self.remotes.asked(found.to_json())
                if served is not None:
                    self._record_use(served, key, crate)
        except Exception as e:  # noqa: BLE001 - bookkeeping for the remote's gc only
            log.debug("cannot note the use of %s %s: %s", crate, key[:16], e)

    def _op_upload(self, msg: dict[str, Any]) -> dict[str, Any]:
        key = P.check_key(msg.get("key"))
        crate = P.check_crate(msg.get("crate"))
        served = self._asked(msg)
        if served is None:
            return {"ok": False, "error": f"upload refused: {crate} {key[:16]}: the request names no remote "
                                          "(cache.remote.bucket is not set)", "remote": None}
        if msg["remote"].get("read_only") is True:
            return {"ok": False, "error": f"upload refused: {crate} {key[:16]}: {served.spec.url} is read-only "
                                          "for this build (cache.remote.read_only)", "remote": served.spec.url}
        return {"ok": True, "queued": self._enqueue(served, key, crate, explicit=True, intent=True)}

    def _op_used(self, msg: dict[str, Any]) -> dict[str, Any]:
        key = P.check_key(msg.get("key"))
        crate = P.check_crate(msg.get("crate"))
        served = self._asked(msg)
        if served is None or msg["remote"].get("read_only") is True:
            return {"ok": True, "queued": False}
        return {"ok": True, "queued": self._record_use(served, key, crate)}

    def _record_use(self, served: Served, key: str, crate: str) -> bool:
        """Queue a record of the use of a remote entry, once a day per daemon (the remote
        object itself says when it was last refreshed: at most one write a day)."""
        day = int(time.time() // 86400)
        with self._lock:
            if self._used.get((served.id, key)) == day:
                return False
            self._used[(served.id, key)] = day
            if len(self._used) > DONE_MEMORY:
                self._used.pop(next(iter(self._used)))
        self._uses.put((served, key, crate))
        return True

    def _op_fetch(self, msg: dict[str, Any]) -> dict[str, Any]:
        start = time.monotonic()
        crate = P.check_crate(msg.get("crate"))
        mkey = P.check_key(msg.get("mkey"), "mkey")
        budget = msg.get("budget_ms", P.FETCH_BUDGET_MS)
        if (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget != budget
                or not 0 <= budget <= 1e9):
            raise ProtocolError(f"invalid request: budget_ms = {json.dumps(budget, default=str)[:40]}: "
                                "expected a number of milliseconds from 0 to 1e9")
        served = self._asked(msg)
        if served is None:
            return {"ok": True, "imported": [], "remote": None}
        if served.down_until > start:
            return {"ok": True, "imported": [], "down": True}
        deadline = start + float(min(budget, P.FETCH_MAX_MS)) / 1000  # min first: 10**400 is an int
        flight = self._fetch_flight(served, crate, mkey, deadline, bool(msg["remote"].get("read_only")))
        if flight.done.wait(max(0.0, deadline - time.monotonic())):
            return {"ok": True, "imported": list(flight.result)}
        imported = self._imported_since(mkey, flight.before)
        if not imported:
            self._fetch_failed(served, "no answer within the build's budget")
        return {"ok": True, "imported": imported, "timed_out": True}

    def _fetch_failed(self, served: Served, why: str) -> None:
        with self._lock:
            down = served.fetch_failed()
        if down:
            self._error(f"remote unavailable: {served.spec.where}: {why}; builds compile without asking it "
                        f"for {DOWN_SECS:g}s")

    def _fetch_flight(self, served: Served, crate: str, mkey: str, deadline: float, read_only: bool) -> _Flight:
        ident = (served.id, crate, mkey)
        with self._lock:
            flight = self._flights.get(ident)
            if flight is not None:
                return flight
        before = set(self._keys_by_mkey(mkey))
        with self._lock:
            flight = self._flights.get(ident)
            if flight is not None:
                return flight
            flight = _Flight(before)
            self._flights[ident] = flight
            self._active += 1
        threading.Thread(target=self._run_fetch, args=(flight, served, crate, mkey, deadline, read_only),
                         name="kache-fetch", daemon=True).start()
        return flight

    def _run_fetch(self, flight: _Flight, served: Served, crate: str, mkey: str, deadline: float,
                   read_only: bool) -> None:
        keys: list[str] = []
        try:
            store = self._store()
            try:
                found = served.fetch_remote.fetch_by_mkey(store, crate, mkey, limit=3, deadline=deadline,
                                                          origin="remote")
                keys = [k for k in found or [] if isinstance(k, str)]
            finally:
                store.close()
            if keys:
                log.info("fetched %s %s from %s: %d entr%s", crate, mkey[:16], served.spec.url, len(keys),
                         "y" if len(keys) == 1 else "ies")
        except Exception as e:
            self._error(f"fetch failed: {crate} {mkey[:16]}: {e}")
            self._fetch_failed(served, str(e))
        else:
            with self._lock:
                served.failures = 0
        finally:
            with self._lock:
                self.downloads += len(keys)
                flight.result = keys
                self._flights.pop((served.id, crate, mkey), None)
                self._active -= 1
            flight.done.set()
            self._touch()
        if not read_only:
            for key in keys:
                self._record_use(served, key, crate)

    def _keys_by_mkey(self, mkey: str) -> list[str]:
        try:
            store = self._store()
            try:
                return store.keys_by_mkey(mkey)
            finally:
                store.close()
        except Exception as e:
            log.debug("cannot read the store: %s", e)
            return []

    def _imported_since(self, mkey: str, before: set[str]) -> list[str]:
        return [k for k in self._keys_by_mkey(mkey) if k not in before]

    def _op_prefetch(self, msg: dict[str, Any]) -> dict[str, Any]:
        root = msg.get("root")
        if not isinstance(root, str) or not root or len(root) > 4096 or "\0" in root or not os.path.isabs(root):
            raise ProtocolError(f"invalid request: root = {json.dumps(root, default=str)[:80]}: "
                                "expected an absolute path")
        served = self._asked(msg)
        if served is None:
            return {"ok": True, "started": False, "reason": "no remote"}
        root = os.path.normpath(root)
        if not os.path.isfile(os.path.join(root, "Cargo.lock")):
            return {"ok": True, "started": False, "reason": f"no Cargo.lock in {root}"}
        now = time.monotonic()
        with self._lock:
            last = self._prefetched.get((served.id, root))
            if last is not None and now - last < self.prefetch_dedupe_secs:
                return {"ok": True, "started": False,
                        "reason": f"a prefetch of this root started {now - last:.0f}s ago"}
            self._prefetched[(served.id, root)] = now
            self.prefetches += 1
            self._active += 1
        threading.Thread(target=self._run_prefetch, args=(served, root), name="kache-prefetch",
                         daemon=True).start()
        return {"ok": True, "started": True}

    def _run_prefetch(self, served: Served, root: str) -> None:
        began = time.monotonic()
        try:
            sync = self._sync_fn
            if sync is None:
                from kache.remote.sync import sync
            store = self._store()
            try:
                report = sync(store, served.remote, pull=True, push=False, all_crates=False,
                              workspace=Path(root), dry_run=False, concurrency=self.concurrency)
            finally:
                store.close()
            n = _count(report, ("pulled", "downloaded", "imported"))
            with self._lock:
                self.downloads += n
            log.info("prefetched %s from %s in %.1fs: %s", root, served.spec.url, time.monotonic() - began,
                     _summary(report))
            failure = _first_failure(report)
            if failure:
                self._error(f"prefetch incomplete: {root}: {failure}")
        except Exception as e:
            self._error(f"prefetch failed: {root}: {e}")
        finally:
            with self._lock:
                self._active -= 1
            self._touch()

    def _op_stop(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "stopping": True, "pid": self.pid}

    _OPS: dict[str, Callable[[Daemon, dict[str, Any]], dict[str, Any]]] = {
        "status": _op_status, "upload": _op_upload, "fetch": _op_fetch, "prefetch": _op_prefetch, "stop": _op_stop,
        "hit": _op_hit, "used": _op_used,
    }

    # ------------------------------------------------------------------ uploads

    def _start_workers(self) -> None:
        for i in range(self.concurrency):
            t = threading.Thread(target=self._worker, name=f"kache-upload-{i}", daemon=True)
            self._workers.append(t)
            t.start()
        t = threading.Thread(target=self._use_worker, name="kache-uses", daemon=True)
        self._workers.append(t)
        t.start()

    def _enqueue(self, served: Served, key: str, crate: str, *, explicit: bool, intent: bool = False) -> int:
        """Queue the upload of ``key`` to ``served`` unless it is queued or done; the jobs
        pending. ``intent``: write its upload intent first, under the lock ``_finish``
        removes intents under, so an intent is never left behind a job that has just ended."""
        job_id = f"{served.id}/{key}"
        with self._lock:
            if intent and not client.write_intent(self.root, key, crate, served.spec):
                log.warning("cannot write the upload intent: %s",
                            client.intent_path(self.root, key, crate, served.id))
            if job_id in self._done:  # uploaded a moment ago: only the intent is left to remove
                done = True
            elif job_id not in self._pending and (explicit or job_id not in self._given_up):
                done = False
                self._given_up.discard(job_id)
                job = _Upload(served.id, key, crate)
                job.queued = True
                self._pending[job_id] = job
                self._queue.put(job_id)
            else:
                done = False
            n = len(self._pending)
        if done:
            self._remove_intent(served.id, key, crate)
        return n

    def _scan_intents(self) -> None:
        """Queue the intents on disk: ``uploads/<remote id>/<key>.<crate>`` for the remote
        its directory names; an older kache's ``uploads/<key>.<crate>`` is moved under the
        daemon's own remote (its settings') when it has one, else left."""
        try:
            names = os.listdir(self.intents_dir)
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("cannot read the upload intents: %s: %s", self.intents_dir, e)
            return
        before = len(self._pending)
        legacy = [parsed for parsed in map(P.parse_intent, names) if parsed is not None]
        if legacy and self._own_spec is not None:
            self._adopt(legacy)
            names = os.listdir(self.intents_dir)
        for name in names:
            if not valid_id(name) or not os.path.isdir(os.path.join(self.intents_dir, name)):
                continue
            try:
                files = os.listdir(os.path.join(self.intents_dir, name))
            except OSError:
                continue
            intents = [parsed for parsed in map(P.parse_intent, files) if parsed is not None]
            if not intents:
                continue
            served = self.remotes.for_intents(self.intents_dir, name)
            if served is None:
                continue
            for key, crate in intents:
                self._enqueue(served, key, crate, explicit=False)
        added = len(self._pending) - before
        if added > 0:
            log.info("queued %d upload(s) from %s", added, self.intents_dir)

    def _adopt(self, legacy: list[tuple[str, str]]) -> None:
        """Move an older kache's intents (they name no remote) under the daemon's own."""
        from kache.daemon.remotes import write_spec

        assert self._own_spec is not None
        if self.remotes.serve(self._own_spec) is None:
            return
        try:
            where = write_spec(self.intents_dir, self._own_spec)
        except OSError as e:
            log.warning("cannot adopt the upload intents of an older kache: %s: %s", self.intents_dir, e)
            return
        for key, crate in legacy:
            name = P.intent_name(key, crate)
            try:
                os.replace(os.path.join(self.intents_dir, name), os.path.join(where, name))
            except OSError:
                continue
        log.info("%d upload intent(s) of an older kache now go to %s", len(legacy), self._own_spec.url)

    def _requeue_due(self, now: float) -> None:
        with self._lock:
            for job_id, job in self._pending.items():
                if not job.queued and not job.running and job.tries and job.next_at <= now:
                    job.queued = True
                    self._queue.put(job_id)

    def _worker(self) -> None:
        store: Store | None = None
        try:
            while True:
                job_id = self._queue.get()
                if job_id is None:
                    return
                with self._lock:
                    job = self._pending.get(job_id)
                    if job is None or job.running:
                        continue
                    job.queued = False
                    job.running = True
                    self._active += 1
                try:
                    if store is None:
                        store = self._store()
                    self._upload(store, job)
                finally:
                    with self._lock:
                        job.running = False
                        self._active -= 1
                    self._touch()
        finally:
            if store is not None:
                store.close()

    def _upload(self, store: Store, job: _Upload) -> None:
        what = f"{job.crate} {job.key[:16]}"
        served = self.remotes.get(job.rid) or self.remotes.for_intents(self.intents_dir, job.rid)
        if served is None:  # its build's keys are gone with the daemon that had them: wait for them
            with self._lock:
                self._pending.pop(f"{job.rid}/{job.key}", None)
            return
        try:
            if store.get(job.key) is None:
                self._skip(store, job, served)
                return
            sent = served.remote.upload_entry(store, job.key)
        except Exception as e:
            if _gone(store, job.key):  # evicted while being packed: nothing to retry
                self._skip(store, job, served)
                return
            self._failed(job, f"{e}" or type(e).__name__)
            return
        log.info("uploaded %s to %s%s", what, served.spec.url, "" if sent else " (the remote had it already)")
        with self._lock:
            self.uploads_done += 1
        self._finish(job)

    def _skip(self, store: Store, job: _Upload, served: Served) -> None:
        """The entry left the local store (gc, purge) before it was uploaded: drop the job,
        without remembering the key as uploaded. A build may record the same key again
        (and ask for its upload while this job ran): then it is queued anew."""
        log.info("upload skipped: %s %s: the entry is no longer in the local store", job.crate, job.key[:16])
        self._finish(job, uploaded=False)
        if not _gone(store, job.key):
            self._enqueue(served, job.key, job.crate, explicit=True, intent=True)

    def _finish(self, job: _Upload, *, uploaded: bool = True) -> None:
        job_id = f"{job.rid}/{job.key}"
        with self._lock:  # with _enqueue's intent: see there
            self._remove_intent(job.rid, job.key, job.crate)
            self._pending.pop(job_id, None)
            if uploaded:
                self._done[job_id] = None
            while len(self._done) > DONE_MEMORY:
                self._done.popitem(last=False)

    def _remove_intent(self, rid: str, key: str, crate: str) -> None:
        path = client.intent_path(self.root, key, crate, rid)
        if path is None:
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the upload intent: %s: %s", path, e)

    def _failed(self, job: _Upload, why: str) -> None:
        what = f"{job.crate} {job.key[:16]}"
        job_id = f"{job.rid}/{job.key}"
        delay = 0.0
        with self._lock:
            job.tries += 1
            self.uploads_failed += 1
            self.last_error = f"upload failed: {what}: {why}"
            give_up = job.tries >= self.max_tries
            if give_up:
                self._pending.pop(job_id, None)
                self._given_up.add(job_id)
            else:
                delay = min(self.retry_delay * 2 ** (job.tries - 1), RETRY_MAX_SECS)
                job.next_at = time.monotonic() + delay
        if give_up:
            log.error("upload failed: %s: %s; giving up after %d tries (the intent stays in %s for the next daemon)",
                      what, why, job.tries, os.path.join(self.intents_dir, job.rid))
        else:
            log.warning("upload failed: %s: %s; retrying in %gs", what, why, delay)

    def _use_worker(self) -> None:
        """Record uses of remote entries (``Remote.record_use``: a HEAD, and a copy onto
        itself when the object was not refreshed today). Best effort: a failure is logged."""
        while True:
            item = self._uses.get()
            if item is None:
                return
            served, key, crate = item
            with self._lock:
                self._active += 1
            try:
                record = getattr(served.remote, "record_use", None)
                if record is not None and record(crate, key):
                    log.debug("recorded the use of %s %s on %s", crate, key[:16], served.spec.url)
            except Exception as e:  # noqa: BLE001 - bookkeeping for the remote's gc only
                log.info("cannot record the use of %s %s on %s: %s", crate, key[:16], served.spec.url, e)
            finally:
                with self._lock:
                    self._active -= 1
                self._touch()

    # ------------------------------------------------------------------ helpers

    def _store(self) -> Store:
        from kache.store.store import Store

        return Store(self.root)

    def _error(self, text: str) -> None:
        with self._lock:
            self.last_error = text
        log.warning("%s", text)


def _warm_remote_imports() -> None:
    """Import boto3 (~250 ms) while no request waits: a build that started this daemon
    has a remote, and its first calls wait for their first fetch."""
    try:
        import boto3.session  # noqa: F401
        import botocore.config  # noqa: F401

        import kache.remote.s3  # noqa: F401
    except Exception:  # noqa: BLE001 - a fetch imports it again and reports
        pass


def _line(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":"), default=str).encode("utf-8") + b"\n"


# Requests are flat objects of scalars; anything nested deeper is refused.
MAX_DEPTH = 8


def _too_deep(value: Any, limit: int) -> bool:
    """Whether a decoded JSON value nests lists/objects more than ``limit`` levels (iterative:
    no recursion limit to hit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _read_line(conn: socket.socket, pending: bytearray) -> bytes:
    """The next line (with its newline), read within ``READ_TIMEOUT`` as a whole: a
    client trickling bytes cannot hold a connection slot longer than that. Returns what
    is left at end of stream (b"" if nothing), at most ``MAX_LINE + 2`` bytes of an
    over-long line (the caller refuses it); raises ``TimeoutError`` (an OSError) when the
    line is not complete in time."""
    deadline = time.monotonic() + P.READ_TIMEOUT
    while True:
        end = pending.find(b"\n")
        if end >= 0 or len(pending) > P.MAX_LINE + 1:
            cut = end + 1 if end >= 0 else P.MAX_LINE + 2
            line = bytes(pending[:cut])
            del pending[:cut]
            return line
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete line within the read timeout")
        conn.settimeout(left)
        chunk = conn.recv(65536)
        if not chunk:
            line = bytes(pending)
            pending.clear()
            return line
        pending += chunk


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


def _gone(store: Store, key: str) -> bool:
    """Whether the entry is (known to be) no longer in the local store."""
    try:
        return store.get(key) is None
    except Exception:  # noqa: BLE001 - unreadable: not known to be gone
        return False


def _is_service(root: str) -> bool:
    from kache.daemon import client

    reply = client.request(root, {"op": "status"}, timeout=2.0)
    return bool(reply and reply.get("service"))


def _stand_by(daemon: Daemon, running: AlreadyRunning) -> None:
    """Wait, without exiting (a service manager would restart it in a loop), until the
    other service's daemon is gone; two services (say a module's and `kache daemon
    install`'s) then take turns instead of evicting each other."""
    from kache.daemon import control

    print(f"{running}, as a service too; standing by until it stops", flush=True)
    while control.running_pid(daemon.root) is not None:
        time.sleep(STAND_BY_SECS)


def _take_over(daemon: Daemon, running: AlreadyRunning) -> None:
    """Ask the daemon that holds the store to stop, and wait until it has (its uploads
    not done stay as intents, which the new one takes up)."""
    from kache.daemon import control

    print(f"{running}; asking it to stop, to run as the service", flush=True)
    control.stop(daemon.root, timeout=TAKE_OVER_SECS)
    deadline = time.monotonic() + TAKE_OVER_SECS
    while control.running_pid(daemon.root) is not None:
        if time.monotonic() > deadline:
            raise KacheError(f"cannot start the daemon: the one running for {daemon.root} (pid {running.pid}) "
                             f"did not stop within {TAKE_OVER_SECS:g}s; stop it with `kache daemon stop`")
        time.sleep(0.1)


def _peer_gone(conn: socket.socket) -> bool:
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


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else 0
    except OSError:
        return 0


def _stderr_is(path: str) -> bool:
    """True when stderr is the log file itself (launchd's StandardErrorPath, ``start``)."""
    try:
        return os.path.samestat(os.fstat(2), os.stat(path))
    except OSError:
        return False


def _count(report: Any, names: tuple[str, ...]) -> int:
    for name in names:
        value = report.get(name) if isinstance(report, dict) else getattr(report, name, None)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
        if isinstance(value, (list, tuple, set, dict)):
            return len(value)
    return 0


def _summary(report: Any) -> str:
    """One line about a sync report: counts when it has them, else its text (shortened)."""
    parts = []
    for name in ("pulled", "pull_up_to_date", "skipped", "failures"):
        value = getattr(report, name, None)
        if isinstance(value, (list, tuple)):
            parts.append(f"{len(value)} {name.replace('_', ' ')}")
        elif isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"{value} {name.replace('_', ' ')}")
    text = ", ".join(parts) if parts else str(report)
    return text if len(text) <= 300 else text[:297] + "..."


def _first_failure(report: Any) -> str | None:
    failures = getattr(report, "failures", None)
    if isinstance(failures, (list, tuple)) and failures:
        return str(failures[0])
    return None


def run(settings: Settings, *, foreground: bool = True, remote: Any = _AUTO,
        sync: Callable[..., Any] | None = None, service: bool = False) -> int:
    """Run a daemon for these settings until it stops; re-execute on code/config changes.

    Returns the exit status: 0 also when another daemon already runs (it says so on
    stdout). As a ``service``, the daemon never idles out, and one already running (a
    build started it before the service manager did) is asked to stop and replaced:
    the service is the one that stays. Raises :class:`kache.errors.KacheError` when the
    socket cannot be set up, or when a running daemon does not make way.
    """
    daemon = Daemon(settings, foreground=foreground, remote=remote, sync=sync, reexec=True, service=service)
    take_overs = 0
    while True:
        try:
            return daemon.serve()
        except AlreadyRunning as e:
            if not service:
                print(str(e), flush=True)
                return 0
            if _is_service(daemon.root):
                _stand_by(daemon, e)  # another service manager's daemon: never evict it
                continue
            if take_overs == TAKE_OVER_TRIES:  # builds keep starting daemons: let the manager retry
                raise KacheError(f"cannot start the daemon: {e}, again after {TAKE_OVER_TRIES} take-overs") from None
            take_overs += 1
            _take_over(daemon, e)
        except OSError as e:
            raise KacheError(f"cannot start the daemon: {e.filename or daemon.socket_path}: "
                             f"{e.strerror or e}") from None
