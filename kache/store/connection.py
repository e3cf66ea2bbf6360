"""The index's SQLite connection: opening (and creating) it, WAL, transactions, busy
handling, file locks, and recovering an index found damaged (under a file lock, once).

A damaged index ("database disk image is malformed", "file is not a database") is moved
aside to ``index.db.corrupt-<time>`` and a new one started: entries are lost (later
misses record them again), blobs stay (gc removes those nothing refers to).

Imported on the wrapper's hot path: stdlib (``_sqlite3``, see below) only.
"""

from __future__ import annotations

import os
import time

from kache.errors import KacheError
from kache.store import layout, schema

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here
if TYPE_CHECKING:
    from typing import Any


def _import_sqlite() -> Any:
    """The C module ``_sqlite3`` itself: the ``sqlite3`` package adds only datetime
    adapters kache never uses (importing ``datetime`` for them cost a hit ~3 ms).

    ``_sqlite3`` takes ``functools.lru_cache`` at import, for its statement cache, and
    ``functools`` brings ``collections``, ``operator``, ``reprlib`` and more: ~4 ms of
    CPU on every wrapper call. When nothing has imported ``functools`` yet, the import
    sees a stand-in whose ``lru_cache`` builds the same C cache that ``functools``
    builds (``_functools._lru_cache_wrapper``); the stand-in is gone from ``sys.modules``
    right after, so anything importing ``functools`` later gets the real one.

    Kept for a bound: a hit's cost (docs/performance.md, "A hit": ~10 ms of imports).
    Measured 2026-12-07 (``-X importtime``, 30 runs, bare interpreter): ``functools``
    is 2.9 ms median (2.6 min) of every wrapper call. tests/test_hot_imports.py
    (``test_a_hit_imports_neither_functools_nor_collections``) keeps it off the hit
    path, and ``test_the_sqlite_stand_in_leaves_the_real_functools_to_later_imports``
    checks the statement cache it builds.
    """
    import sys

    try:
        from _functools import _lru_cache_wrapper  # type: ignore[import-not-found]  # C module, no stub
    except ImportError:  # pragma: no cover - another interpreter
        _lru_cache_wrapper = None
    if "functools" in sys.modules or "_sqlite3" in sys.modules or _lru_cache_wrapper is None:
        import _sqlite3

        return _sqlite3

    def lru_cache(maxsize: int | None = 128, typed: bool = False) -> Any:
        return lambda function: _lru_cache_wrapper(function, maxsize, typed, _cache_info)

    stand_in = type(sys)("functools")
    stand_in.lru_cache = lru_cache  # type: ignore[attr-defined]
    sys.modules["functools"] = stand_in
    try:
        import _sqlite3
    finally:
        if sys.modules.get("functools") is stand_in:
            del sys.modules["functools"]
    return _sqlite3


def _cache_info(hits: int, misses: int, maxsize: int | None, currsize: int) -> tuple[int, int, int | None, int]:
    return hits, misses, maxsize, currsize


if TYPE_CHECKING:
    import sqlite3
else:
    try:
        sqlite3 = _import_sqlite()
    except ImportError:  # pragma: no cover
        import sqlite3

__all__ = ["Connection", "Transaction", "Bulk", "Flock", "StoreError", "is_damage", "moved_under", "index_is_sound",
           "sqlite3",
           "WAL_WAIT_SECS", "BULK_CACHE_KIB", "BULK_WAL_BYTES"]

WAL_WAIT_SECS = 5.0
# Store.bulk(): its page cache, and how large it lets the WAL grow between checkpoints.
BULK_CACHE_KIB = 65536
BULK_WAL_BYTES = 64 << 20


class StoreError(KacheError):
    """The store cannot be used (unwritable, corrupt); the wrapper then runs rustc plainly."""


# What SQLite says when the index's files were moved aside (a parallel recovery) while
# this connection opened or used them: the file gone when the -wal or -journal was made
# (FSTAT), a journal gone (DELETE_NOENT), a write to a file renamed (DBMOVED).
_MOVED_UNDER = frozenset({"SQLITE_READONLY_DBMOVED", "SQLITE_IOERR_FSTAT", "SQLITE_IOERR_DELETE_NOENT"})


def moved_under(e: BaseException | None) -> bool:
    """Whether an SQLite error says the index was moved aside under the connection."""
    return getattr(e, "sqlite_errorname", None) in _MOVED_UNDER


def is_damage(e: BaseException) -> bool:
    """Whether an error says the index file itself is damaged ("database disk image is
    malformed", "file is not a database") or was moved aside under the connection (both
    mean: recover, then open the index in place), not that it is busy, missing or
    read-only."""
    cause = e.__cause__ if isinstance(e, StoreError) else e
    return type(cause) is sqlite3.DatabaseError or moved_under(cause)


def index_is_sound(path: str) -> bool:
    """``PRAGMA quick_check`` of an index on a connection of its own (missing counts as
    sound; so does one busy or unreadable, "disk I/O error" included: a parallel move
    aside gives that, and taking it for damage moved new indexes aside, in use)."""
    if not os.path.exists(path):
        return True
    try:
        db = sqlite3.connect(path, timeout=30.0)
        try:
            return bool(db.execute("PRAGMA quick_check").fetchone()[0] == "ok")
        finally:
            db.close()
    except sqlite3.OperationalError:
        return True  # busy or unreadable: not evidence of damage
    except sqlite3.DatabaseError:
        return False


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch the index to WAL (it stays so; then this is a no-op). The switch needs the
    database to itself and SQLite does not wait for that (no busy handler): when parallel
    calls create a new store, the others' connections make it fail with "database is
    locked" at once. Retry briefly; if it still cannot, go on in rollback-journal mode
    (correct, only less concurrent) and let a later connection switch."""
    deadline = time.monotonic() + WAL_WAIT_SECS
    delay = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            if time.monotonic() > deadline:
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


class Transaction:
    """``with Transaction(db):`` one ``BEGIN IMMEDIATE`` (or ``begin``) … ``COMMIT``,
    ``ROLLBACK`` on any exception (a class: ``contextlib`` would cost the wrapper's hot
    path its ``functools`` and ``collections`` imports)."""

    __slots__ = ("db", "begin")

    def __init__(self, db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> None:
        self.db = db
        self.begin = begin

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute(self.begin)
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


class Flock:
    """``with Flock(path):`` an exclusive flock on ``path`` (created owner-only), which
    the kernel releases when its holder dies."""

    __slots__ = ("path", "fd")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        import fcntl

        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        os.close(self.fd)


class Bulk:
    """``with connection.bulk():`` many write transactions in a row on a large page cache,
    the WAL checkpointed by ``maybe_checkpoint()`` between batches and at the end."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __enter__(self) -> Bulk:
        db = self.conn.db
        db.execute(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")
        db.execute("PRAGMA wal_autocheckpoint = 0")
        db.execute("PRAGMA journal_size_limit = 0")  # so the WAL file's size is what is in it
        return self

    def maybe_checkpoint(self) -> None:
        try:
            large = os.stat(layout.index_path(self.conn.root) + "-wal").st_size > BULK_WAL_BYTES
        except OSError:
            return
        if large:
            self.conn.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.conn.is_open:
            return
        db = self.conn.db
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.execute("PRAGMA wal_autocheckpoint = 1000")
            db.execute("PRAGMA journal_size_limit = -1")
            db.execute("PRAGMA cache_size = -2000")


class Connection:
    """The index of the store at ``root``: one SQLite connection, opened on first use
    (and, unless ``create`` is false, the store's directories and index created)."""

    __slots__ = ("root", "create", "recovered", "_db")

    def __init__(self, root: str, *, create: bool = True) -> None:
        self.root = root
        self.create = create
        self.recovered: str | None = None
        """Where a corrupt index was moved aside by this process, if it was."""
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def write(self, db: sqlite3.Connection | None = None) -> Transaction:
        """``with conn.write() as db:`` one ``BEGIN IMMEDIATE`` … ``COMMIT``."""
        return Transaction(db or self.db)

    def read(self) -> Transaction:
        """``with conn.read() as db:`` queries that see one snapshot of the index."""
        return Transaction(self.db, "BEGIN")

    def bulk(self) -> Bulk:
        return Bulk(self)

    def _open(self) -> sqlite3.Connection:
        for attempt in (1, 2):
            try:
                return self._connect()
            except StoreError as e:
                if attempt == 1 and moved_under(e.__cause__):
                    # moved aside while this opened it: wait for that recovery, open again
                    with self._recovery_lock():
                        continue
                if not self.create or not isinstance(e.__cause__, sqlite3.DatabaseError) or isinstance(
                        e.__cause__, sqlite3.OperationalError):
                    raise
                break
        return self._recover()

    def _recover(self) -> sqlite3.Connection:
        """Move a corrupt index aside (under a lock, once) and start a new one."""
        with self._recovery_lock():
            try:
                return self._connect()  # another process may have recovered it already
            except StoreError:
                pass
            self._move_aside()
            return self._connect()

    def recover_if_corrupt(self) -> bool:
        """After a query failed with "malformed" or "not a database" (an index damaged
        while in use, or torn so that it still opens): check it on a new connection and,
        if it really is damaged, move it aside and start a new one, as at open. Returns
        True when this call moved it aside."""
        self.close()
        with self._recovery_lock():
            if index_is_sound(layout.index_path(self.root)):
                return False  # not damaged, or another process recovered it meanwhile
            self._move_aside()
            self._db = self._connect()
            return True

    def _recovery_lock(self) -> Flock:
        """One process at a time decides about a damaged index (an flock the kernel drops
        when its holder dies)."""
        return Flock(layout.recovery_lock_path(self.root))

    def _move_aside(self) -> None:
        """Rename index.db and its -wal/-shm to ``index.db.corrupt-<time>`` (gc removes
        them after a week); call under the recovery lock. A file gone meanwhile is no
        error (SQLite deletes the WAL of an empty index it opens)."""
        path = layout.index_path(self.root)
        aside = layout.moved_aside_index(self.root, int(time.time()))
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(path + suffix, aside + suffix)
            except FileNotFoundError:
                pass
        self.recovered = aside

    def _connect(self) -> sqlite3.Connection:
        path = layout.index_path(self.root)
        if not self.create and not os.path.exists(path):
            raise StoreError(f"no store at {self.root}")
        try:
            if self.create:
                old = os.umask(0o077)
                try:
                    for sub in (self.root, layout.blobs_dir(self.root), layout.tmp_dir(self.root),
                                layout.locks_dir(self.root)):
                        os.makedirs(sub, exist_ok=True)
                    try:  # owner-only index (SQLite gives its -wal and -shm the same mode)
                        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
                    except FileExistsError:
                        pass
                finally:
                    os.umask(old)
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout = 30000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != schema.SCHEMA_VERSION:
                with Transaction(db):
                    schema.upgrade(db)
            _use_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open the store index {path}: {e}") from e
        return db
