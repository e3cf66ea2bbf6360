"""The store's on-disk layout: the name of everything kache keeps under a store root.

The one place that knows these names; everything else asks here::

    index.db                   the SQLite index (WAL: index.db-wal, index.db-shm)
    index.db.corrupt-<time>    a damaged index moved aside (gc removes it after a week)
    store/ab/<hash>            blobs (see blobs.py)
    locks/                     flock files: per cheap key while compiling, index recovery
    events.jsonl               one line per wrapper call (events.1.jsonl: the rotated one)
    stats-zero.json            when `kache stats --zero` last zeroed the statistics
    daemon.pid, daemon.sock, daemon.log   the daemon's lock, socket and log
    run.sock                   the daemon's runner: it runs the calls the daemon does not serve
    kache.log                  the wrapper's warnings (kache.log.1: the older half)
    uploads/                   the daemon's upload intents
    tmp/                       scratch: atomic writes (put-*), purge-* dirs, doctor probes,
                               and the stamps and memos below

Scratch in ``tmp/`` that is kept on purpose (gc's sweep of ``tmp/`` spares it):
``STAMP_DIRS`` (directories of stamps, dropped when old) and ``KEPT_FILES``.

Imported on the wrapper's hot path: ``os`` only.
"""

from __future__ import annotations

import os

__all__ = [
    "INDEX", "INDEX_FILES", "BLOBS", "TMP", "LOCKS", "UPLOADS", "SOCKET", "PID", "LOG", "EVENTS",
    "WARNED", "SETTINGS", "GC_CHECKED", "GC_LAST", "STATS_FOLD", "DAEMON_AUTOSTART", "DAEMON_STALLED",
    "STAMP_DIRS", "KEPT_FILES", "PURGE_PREFIX", "PUT_PREFIX", "DOCTOR_PREFIX", "CORRUPT_PREFIX", "PRIVATE_FILES",
    "WRAPPER_LOG", "STATS_ZERO", "stats_zero_path", "index_path", "blobs_dir", "blob_path", "tmp_dir", "tmp_path", "locks_dir", "lock_path",
    "recovery_lock_path", "events_path", "socket_path", "RUN_SOCKET", "run_socket_path", "pid_path", "log_path", "uploads_dir",
    "purge_dir", "put_path", "doctor_probe", "moved_aside_index", "is_moved_aside_index", "wrapper_log_path",
]

# --- at the root
INDEX = "index.db"
INDEX_FILES = (INDEX, INDEX + "-wal", INDEX + "-shm")
"""The index and the files SQLite keeps beside it."""
CORRUPT_PREFIX = INDEX + ".corrupt-"
BLOBS = "store"
TMP = "tmp"
LOCKS = "locks"
UPLOADS = "uploads"
SOCKET = "daemon.sock"
RUN_SOCKET = "run.sock"
"""The daemon's runner (kache.daemon.runner): a process with kache imported that forks one
child per compiler call the daemon does not serve as a hit."""
PID = "daemon.pid"
LOG = "daemon.log"
EVENTS = "events.jsonl"
STATS_ZERO = "stats-zero.json"
"""``{"t": <unix time>}``: ``kache stats`` counts the events from then on (kache.store.stats)."""
WRAPPER_LOG = "kache.log"
"""The wrapper's warnings, in the store (else in the default cache dir)."""
PRIVATE_FILES = (*INDEX_FILES, EVENTS, LOG)
"""Files doctor makes owner-only in a store that is not."""

# --- in tmp/: stamp directories (gc drops their old stamps, keeps the directories)
WARNED = "warned"
"""``tmp/warned/<digest>``: a warning the wrapper printed once (kache.engine.notices)."""
SETTINGS = "settings"
"""``tmp/settings/<identity>.json``: the wrapper's memo of validated settings (kache.settings)."""
STAMP_DIRS = frozenset({WARNED, SETTINGS})

# --- in tmp/: files kept on purpose
GC_CHECKED = "gc-checked"
"""When the wrapper last considered an automatic gc (kache.engine.handle)."""
GC_LAST = "gc-last.json"
"""The last gc report (kache.store.gc; doctor, the monitor and tests read it)."""
STATS_FOLD = "stats-fold.json"
"""The fold of the event log kept by ``kache stats`` (kache.store.stats)."""
DAEMON_AUTOSTART = "daemon-autostart"
"""When the wrapper last tried to start the daemon (kache.wrapper.daemon_remote)."""
KEPT_FILES = frozenset({GC_LAST, GC_CHECKED, DAEMON_AUTOSTART, STATS_FOLD})
DAEMON_STARTING = "daemon-starting"
"""The pid ``kache daemon start`` launched, until that daemon takes its pid file
(kache.daemon.control); meaningful for 30 s only, so gc may sweep it."""
DAEMON_STALLED = "daemon-stalled"
"""A daemon failed to answer (kache.wrapper.daemon_hit); meaningful for 30 s only, so
gc's sweep of old temp files may take it."""

# --- in tmp/: temp files and directories gc sweeps when old
PUT_PREFIX = "put-"
PURGE_PREFIX = "purge-"
DOCTOR_PREFIX = "doctor-"


def index_path(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, INDEX)


def moved_aside_index(root: str | os.PathLike[str], when: int) -> str:
    """``index.db.corrupt-<when>``: where a damaged index is moved aside."""
    return os.path.join(root, f"{CORRUPT_PREFIX}{when}")


def is_moved_aside_index(name: str) -> bool:
    return name.startswith(CORRUPT_PREFIX)


def blobs_dir(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, BLOBS)


def blob_path(root: str | os.PathLike[str], digest: str) -> str:
    """``store/<first two hex digits>/<hash>``."""
    return os.path.join(root, BLOBS, digest[:2], digest)


def tmp_dir(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, TMP)


def tmp_path(root: str | os.PathLike[str], name: str) -> str:
    """``tmp/<name>``: one of the names above (``GC_LAST``, ``WARNED``, …)."""
    return os.path.join(root, TMP, name)


def put_path(root: str | os.PathLike[str], token: str) -> str:
    """A temp file an atomic write renames into place."""
    return os.path.join(root, TMP, f"{PUT_PREFIX}{os.getpid()}-{token}")


def purge_dir(root: str | os.PathLike[str], stamp: int) -> str:
    """Where ``purge`` moves ``store/`` aside before deleting it."""
    return os.path.join(root, TMP, f"{PURGE_PREFIX}{os.getpid()}-{stamp}")


def doctor_probe(root: str | os.PathLike[str]) -> str:
    """The file ``kache doctor`` writes to see that the store is writable."""
    return os.path.join(root, TMP, f"{DOCTOR_PREFIX}{os.getpid()}")


def locks_dir(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, LOCKS)


def lock_path(root: str | os.PathLike[str], name: str) -> str:
    """``locks/<name>``: a per-compile lock (named after its cheap key) or the recovery lock."""
    return os.path.join(root, LOCKS, name)


def recovery_lock_path(root: str | os.PathLike[str]) -> str:
    """The flock under which one process at a time decides about a damaged index."""
    return lock_path(root, "index-recovery")


def events_path(root: str | os.PathLike[str], n: int = 0) -> str:
    """The current event log (``n`` 0) or the rotated one (``n`` 1)."""
    return os.path.join(root, EVENTS if n == 0 else f"events.{n}.jsonl")


def stats_zero_path(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, STATS_ZERO)


def socket_path(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, SOCKET)


def run_socket_path(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, RUN_SOCKET)


def pid_path(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, PID)


def log_path(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, LOG)


def wrapper_log_path(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, WRAPPER_LOG)


def uploads_dir(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, UPLOADS)
