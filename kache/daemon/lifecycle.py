"""The daemon process's life: one daemon per store, how it stops, when it re-executes
itself, and its upkeep of the store while it runs.

``<store>/daemon.pid`` holds the pid under an exclusive ``flock`` for the daemon's whole
life (:class:`PidFile`), so two daemons cannot both run: a second one logs nothing and
returns at once, saying which pid runs (:class:`AlreadyRunning`). A service behind
another service's daemon stands by until it is gone (:func:`stand_by`); a service that
finds a build's daemon asks it to stop and takes its place (:func:`take_over`). SIGTERM
and SIGINT stop the daemon cleanly (:class:`Signals`). When the kache package's ``.py``
files or the config files change (:class:`Changes`), the daemon stops the same way and
re-executes itself (:func:`reexec`, :mod:`kache.selfexec`), so a service or a long-lived
daemon always runs the installed code and settings. While it runs, :class:`Upkeep`
keeps the store under ``cache.local_max_size`` and ``kache stats``'s fold of the event
log up to date.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kache.errors import KacheError

if TYPE_CHECKING:
    from kache.settings import Settings

__all__ = ["AlreadyRunning", "PidFile", "Signals", "Changes", "Upkeep", "reexec", "is_service", "stand_by",
           "take_over", "PACKAGE_DIR"]

log = logging.getLogger("kache.daemon")

GC_CHECK_SECS = 600.0
"""How often the daemon checks the store against local_max_size."""
TAKE_OVER_SECS = 15.0  # how long a service waits for the daemon it replaces
TAKE_OVER_TRIES = 3  # a build may start another daemon between the stop and the start
STAND_BY_SECS = 2.0  # how often a service behind another service looks whether it is gone
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The kache package: its code changing re-executes the daemon."""


class AlreadyRunning(Exception):
    """Another daemon holds the pid file's lock; ``pid`` is its pid (0 when unreadable)."""

    def __init__(self, pid: int, pid_path: str) -> None:
        self.pid = pid
        self.pid_path = pid_path
        super().__init__(f"kache daemon is already running (pid {pid or '?'})")


class PidFile:
    """``<store>/daemon.pid``, locked (``flock``) for as long as the daemon runs."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def lock(self) -> None:
        """Take the lock and write our pid. Raises :class:`AlreadyRunning`."""
        for attempt in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                if attempt < 2:  # a status probe may hold a shared lock for a moment
                    time.sleep(0.02)
                    continue
                raise AlreadyRunning(pid, self.path) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # the previous daemon removed it between our open and our lock
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd
            return
        raise AlreadyRunning(0, self.path)

    def release(self) -> None:
        """Remove the file while still holding the lock, then let go: once the lock is
        free, the daemon is gone."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else 0
    except OSError:
        return 0


class Signals:
    """SIGTERM and SIGINT call ``stop(reason)`` while installed (the previous handlers
    come back on :meth:`restore`)."""

    def __init__(self, stop: Callable[[str], None]) -> None:
        self._stop = stop
        self._saved: dict[int, Any] = {}

    def install(self, wanted: bool | None) -> None:
        """Install the handlers; ``wanted`` None: only from the main thread (the only one
        Python lets set them)."""
        if wanted is None:
            wanted = threading.current_thread() is threading.main_thread()
        if not wanted:
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._saved[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop(f"signal {signal.Signals(signum).name}")

    def restore(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()


class Changes:
    """Whether kache's code (the ``.py`` and ``.json`` files under ``watch_dir``) or the
    config files changed since :meth:`remember`."""

    def __init__(self, settings: Settings, watch_dir: str) -> None:
        self.settings = settings
        self.watch_dir = watch_dir
        self._code0 = 0
        self._config0: tuple[Any, ...] = ()

    def remember(self) -> None:
        """Take the code and config as they are now as the reference."""
        self._code0 = self._code_stamp()
        self._config0 = self._config_stamp()

    def reason(self) -> str | None:
        """What changed since :meth:`remember` (None: nothing)."""
        if self._code_stamp() != self._code0:
            return "kache's code changed"
        if self._config_stamp() != self._config0:
            return "a config file changed"
        return None

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


def reexec(foreground: bool, service: bool, hook: Callable[[list[str]], None] | None = None) -> None:
    """Replace the process with ``kache daemon run`` in the same mode (``hook``, for
    tests, gets the argv instead)."""
    from kache import selfexec

    argv = selfexec.command("daemon", "run", *([] if foreground else ["--detached"]),
                            *(["--service"] if service else []))
    if hook is not None:
        hook(argv)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, selfexec.environ())


class Upkeep:
    """The store's upkeep, in a thread each, while the daemon runs: gc when the store
    passed ``cache.local_max_size``, and folding the event log for ``kache stats``."""

    def __init__(self, settings: Settings, root: str, fold_bytes: int) -> None:
        self.settings = settings
        self.root = root
        self.fold_bytes = fold_bytes
        self.gc_thread: threading.Thread | None = None
        self.fold_thread: threading.Thread | None = None
        self._folded: tuple[int, int] | None = None  # (inode, size) of the log when last folded

    def start_gc_if_over(self) -> None:
        """Collect in a thread when the store passed local_max_size (the
        limit holds whether or not builds run `kache gc`: a store must never grow unbounded)."""
        if self.gc_thread is not None and self.gc_thread.is_alive():
            return

        def run() -> None:
            from kache.engine.decide import drops_incremental
            from kache.store.gc import gc
            from kache.store.store import Store

            store = Store(self.root)
            try:
                limit = self.settings.converted("cache.local_max_size")
                if store.totals()["physical_bytes"] <= limit:
                    return
                report = gc(store, limit, max_age=None,
                            clean_incremental=drops_incremental(self.settings))
                log.info("gc: store was over %d bytes: %s", limit, report.to_json())
            except Exception as e:  # noqa: BLE001 - upkeep must not kill the daemon
                log.warning("gc failed: %s", e)
            finally:
                store.close()

        self.gc_thread = threading.Thread(target=run, name="kache-gc", daemon=True)
        self.gc_thread.start()

    def fold_stats_if_grown(self) -> None:
        """Bring ``kache stats``'s kept fold of the event log up to date in a thread, when
        the log grew by ``fold_bytes`` (or rotated) since the last time: ``kache stats``
        then folds only what came after (a full log, 100,000 events, costs it ~0.5 s).
        The fold holds the GIL while it parses (~35 ms per MiB): call it only while the
        daemon is idle."""
        if self.fold_thread is not None and self.fold_thread.is_alive():
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

        self.fold_thread = threading.Thread(target=run, name="kache-stats", daemon=True)
        self.fold_thread.start()


def is_service(root: str) -> bool:
    """Whether the daemon running for the store at ``root`` runs as a service."""
    from kache.daemon import client

    reply = client.request(root, {"op": "status"}, timeout=2.0)
    return bool(reply and reply.get("service"))


def stand_by(root: str, running: AlreadyRunning) -> None:
    """Wait, without exiting (a service manager would restart it in a loop), until the
    other service's daemon is gone; two services (say a module's and `kache daemon
    install`'s) then take turns instead of evicting each other."""
    from kache.daemon import control

    print(f"{running}, as a service too; standing by until it stops", flush=True)
    while control.running_pid(root) is not None:
        time.sleep(STAND_BY_SECS)


def take_over(root: str, running: AlreadyRunning) -> None:
    """Ask the daemon that holds the store to stop, and wait until it has (its uploads
    not done stay as intents, which the new one takes up)."""
    from kache.daemon import control

    print(f"{running}; asking it to stop, to run as the service", flush=True)
    control.stop(root, timeout=TAKE_OVER_SECS)
    deadline = time.monotonic() + TAKE_OVER_SECS
    while control.running_pid(root) is not None:
        if time.monotonic() > deadline:
            raise KacheError(f"cannot start the daemon: the one running for {root} (pid {running.pid}) "
                             f"did not stop within {TAKE_OVER_SECS:g}s; stop it with `kache daemon stop`")
        time.sleep(0.1)
