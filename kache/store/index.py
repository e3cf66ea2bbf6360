"""The local store: an SQLite index over content-addressed blobs.

Layout under ``local_store``::

    index.db        SQLite, WAL mode (entries, manifests, file-hash memo, tool memo)
    store/ab/<hash> blobs (see blobs.py)
    tmp/            temp files for atomic writes, stamps
    locks/          per-compile lock files (flock; released by the kernel on death)
    events.jsonl    one line per wrapper call (see events.py)

Tables (schema version in ``PRAGMA user_version``; a newer or older version is
rebuilt, never guessed at):

``entries``      one per cache key: crate, kinds, size, times, hits, and ``meta``, a JSON
                 document with the files (name, blob hash, size, mode), the replayed
                 stdout/stderr, the normalised dep-info and the key's components; for a
                 workspace crate, its incremental session (``incremental``: checkout,
                 directory names, files), which never goes to the remote. Beside them,
                 the entry's ``kache list`` texts (see listing.py).
``entry_blobs``  which blobs an entry uses, the session's too (gc's reference count).
``manifests``    direct mode (ccache's name): under a cheap key computed before
                 compiling (``mkey``), the inputs rustc reported (path, blake3) and the
                 env-deps of each recorded compile, newest first.
``file_hashes``  blake3 memo keyed on (path, dev, inode, size, mtime_ns, ctime_ns).
``tool_memo``    memo of tool identities (``rustc -vV``) keyed on the binary's stat.
``incremental``  incremental dirs seen on wrapped calls, for gc to remove.
``incremental_files``  per incremental crate dir, the (dev, inode, size, mtime_ns) and
                 blob hash of each file of the last session snapshotted from it.
``blob_stamps``  per blob, the (inode, size, mtime_ns) it had when kache last wrote,
                 verified or restored it. A blob whose stat still matches is taken as
                 intact (one ``stat``); any other is re-hashed before it is used, and a
                 blob that no longer matches its name is removed with its entries. A
                 write, a truncation or a replacement changes the stamp; ``cargo clean``
                 (a link count) does not.

Every write is one transaction; an entry is inserted only after all its blobs exist,
so a crash can leave orphan blobs (gc removes them) but never an entry without data.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here


def _import_sqlite() -> Any:
    """The C module ``_sqlite3`` itself: the ``sqlite3`` package adds only datetime
    adapters kache never uses (importing ``datetime`` for them cost a hit ~3 ms).

    ``_sqlite3`` takes ``functools.lru_cache`` at import, for its statement cache, and
    ``functools`` brings ``collections``, ``operator``, ``reprlib`` and more: ~4 ms of
    CPU on every wrapper call. When nothing has imported ``functools`` yet, the import
    sees a stand-in whose ``lru_cache`` builds the same C cache that ``functools``
    builds (``_functools._lru_cache_wrapper``); the stand-in is gone from ``sys.modules``
    right after, so anything importing ``functools`` later gets the real one.
    """
    import sys

    try:
        from _functools import _lru_cache_wrapper
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


try:
    sqlite3 = _import_sqlite()
except ImportError:  # pragma: no cover
    import sqlite3  # type: ignore[no-redef]

from kache import quickjson
from kache._record import Record
from kache.store import blobs, listing

if TYPE_CHECKING:
    from collections.abc import Callable, Container, Iterable, Iterator
    from typing import Any

__all__ = ["Store", "Entry", "StoreError", "DamagedBlob", "SCHEMA_VERSION", "is_damage", "index_is_sound"]

# History: 1 — first layout; 2 — index on manifests(key) (removal no longer scans);
# 3 — blob_stamps (added in place: a version-2 index keeps its entries);
# 4 — covering indexes for listing, totals and gc (entries_summary, entry_blobs_hash_size),
#     which replace entries_crate, entries_last_used and entry_blobs_hash (built in place);
# 5 — incremental_files, the memo of incremental session files (added in place);
# 6 — each entry's `kache list` texts (the --json object in parts: json_head, json_mid,
#     json_used, json_tail; the table's size_text; see listing.py), in entries_listing,
#     which replaces entries_summary (the columns added and written in place);
# 7 — entries_table, the table's columns without the --json texts (built in place).
SCHEMA_VERSION = 7
# Versions that become the current one by creating the tables, columns and indexes they
# lack (and dropping the indexes in _DROPPED).
_ADDITIVE = {2, 3, 4, 5, 6}
_DROPPED = ("entries_crate", "entries_last_used", "entry_blobs_hash", "entries_summary")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    crate_name TEXT NOT NULL,
    crate_types TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    profile TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    compile_ms INTEGER NOT NULL DEFAULT 0,
    key_version INTEGER NOT NULL,
    mkey TEXT NOT NULL,
    meta TEXT NOT NULL,
    json_head TEXT NOT NULL DEFAULT '',
    json_mid TEXT NOT NULL DEFAULT '',
    json_used TEXT NOT NULL DEFAULT '',
    json_tail TEXT NOT NULL DEFAULT '',
    size_text TEXT NOT NULL DEFAULT ''
);
-- Every column `kache list` shows, in its default order, and the --json texts: listings
-- read this index alone, never the rows with their meta (~10x less to read), and other
-- orders sort it.
CREATE INDEX IF NOT EXISTS entries_listing ON entries(
    crate_name, created DESC, key, crate_types, target, profile, size, last_used, hits, compile_ms,
    json_head, json_mid, json_used, json_tail, size_text);
-- The same without the --json texts (~100 bytes an entry, not ~700): `kache list`'s table
-- and its widths, totals and gc's LRU plan and age cut read this one (100,000 entries:
-- widths 70 -> 42 ms, lines 384 -> 300 ms). A hit's touch updates both indexes.
CREATE INDEX IF NOT EXISTS entries_table ON entries(
    crate_name, created DESC, key, crate_types, profile, size_text, hits, last_used, size);
CREATE TABLE IF NOT EXISTS entry_blobs (
    key TEXT NOT NULL,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (key, hash)
) WITHOUT ROWID;
-- Covers the physical total (each blob once) and "who else uses this blob?".
CREATE INDEX IF NOT EXISTS entry_blobs_hash_size ON entry_blobs(hash, size);
CREATE TABLE IF NOT EXISTS manifests (
    mkey TEXT NOT NULL,
    key TEXT NOT NULL,
    inputs TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (mkey, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifests_key ON manifests(key);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tool_memo (
    id TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incremental (
    path TEXT PRIMARY KEY,
    last_seen REAL NOT NULL
);
-- The files of the last session snapshotted per incremental crate dir, by inode: rustc
-- hardlinks what it reuses into the next session, so those are not hashed again.
CREATE TABLE IF NOT EXISTS incremental_files (
    dir TEXT NOT NULL,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (dir, dev, ino)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_stamps (
    hash TEXT PRIMARY KEY,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""

# Entries used this recently are never evicted: a build may be restoring them.
PIN_SECS = 120.0
# A manifest keeps this many recorded compiles per cheap key (newest win).
MANIFEST_CAP = 16


WAL_WAIT_SECS = 5.0
# Store.bulk(): its page cache, and how large it lets the WAL grow between checkpoints.
BULK_CACHE_KIB = 65536
BULK_WAL_BYTES = 64 << 20


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


class _Transaction:
    """The context manager behind ``Store._write`` (a class: ``contextlib`` would cost the
    wrapper's hot path its ``functools`` and ``collections`` imports)."""

    __slots__ = ("db", "begin")

    def __init__(self, db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> None:
        self.db = db
        self.begin = begin

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute(self.begin)
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


class _Bulk:
    """The context manager behind ``Store.bulk``; ``maybe_checkpoint()`` between batches."""

    __slots__ = ("store",)

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> _Bulk:
        db = self.store.db
        db.execute(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")
        db.execute("PRAGMA wal_autocheckpoint = 0")
        db.execute("PRAGMA journal_size_limit = 0")  # so the WAL file's size is what is in it
        return self

    def maybe_checkpoint(self) -> None:
        try:
            large = os.stat(os.path.join(self.store.root, "index.db-wal")).st_size > BULK_WAL_BYTES
        except OSError:
            return
        if large:
            self.store.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        db = self.store._db
        if db is None:
            return
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.execute("PRAGMA wal_autocheckpoint = 1000")
            db.execute("PRAGMA journal_size_limit = -1")
            db.execute("PRAGMA cache_size = -2000")


class _Flock:
    """``with _Flock(path):`` an exclusive flock on ``path`` (created owner-only)."""

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


class StoreError(Exception):
    """The store cannot be used (unwritable, corrupt); the wrapper then runs rustc plainly."""


class DamagedBlob(StoreError):
    """A blob an entry needs is missing, truncated or no longer matches its hash."""

    def __init__(self, digest: str, problem: str) -> None:
        super().__init__(f"blob {digest[:16]}: {problem}")
        self.digest = digest
        self.problem = problem


def is_damage(e: BaseException) -> bool:
    """Whether an error says the index file itself is damaged ("database disk image is
    malformed", "file is not a database"), not that it is busy, missing or read-only."""
    cause = e.__cause__ if isinstance(e, StoreError) else e
    return type(cause) is sqlite3.DatabaseError


def index_is_sound(path: str) -> bool:
    """``PRAGMA quick_check`` of an index on a connection of its own (missing counts as sound)."""
    if not os.path.exists(path):
        return True
    try:
        db = sqlite3.connect(path, timeout=30.0)
        try:
            return db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            db.close()
    except sqlite3.OperationalError:
        return True  # busy or unreadable: not evidence of damage
    except sqlite3.DatabaseError:
        return False


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Entry(Record):
    """One row of ``entries``, its ``meta`` JSON decoded."""

    __slots__ = ("key", "crate_name", "crate_types", "target", "profile", "size", "created", "last_used",
                 "hits", "compile_ms", "key_version", "mkey", "meta")
    key: str
    crate_name: str
    crate_types: str
    target: str
    profile: str
    size: int
    created: float
    last_used: float
    hits: int
    compile_ms: int
    key_version: int
    mkey: str
    meta: dict[str, Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Entry:
        d = dict(row)
        d["meta"] = quickjson.loads(d["meta"])
        return cls(**d)


# The columns of ``entries`` an ``Entry`` holds (the listing's texts are made from them).
_ENTRY_SELECT = ", ".join(Entry.__slots__)


class Store:
    """One local store; cheap to open (one SQLite connection, created on first use)."""

    def __init__(self, root: str, *, create: bool = True) -> None:
        self.root = os.path.abspath(root)
        self._db: sqlite3.Connection | None = None
        self._create = create
        self.recovered: str | None = None
        """Where a corrupt index was moved aside by this process, if it was."""
        self._verified: set[str] = set()
        """Blobs this process wrote or checked: their stamps are (re)recorded on the next write."""

    # ------------------------------------------------------------------ plumbing

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def open(self) -> Store:
        """Open (and, unless ``create=False``, create) the index now rather than on first
        use, so that a broken store is reported where the caller can say so."""
        _ = self.db
        return self

    @property
    def is_open(self) -> bool:
        """Whether the index connection is open (a closed store opens again on use)."""
        return self._db is not None

    def transaction(self) -> _Transaction:
        """``with store.transaction() as db:`` one ``BEGIN IMMEDIATE`` … ``COMMIT`` that
        several writes share (see :meth:`_write`)."""
        return self._write()

    def forget_verified(self) -> None:
        """Drop the memo of blobs this connection checked (a long-lived store between
        requests: each request stamps its own blobs)."""
        self._verified.clear()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except StoreError as e:
            if not self._create or not isinstance(e.__cause__, sqlite3.DatabaseError) or isinstance(
                    e.__cause__, sqlite3.OperationalError):
                raise
        return self._recover()

    def _recover(self) -> sqlite3.Connection:
        """Move a corrupt index aside (under a lock, once) and start a new one.

        Blobs stay; entries are lost (they are rebuilt by later misses) and gc removes
        the blobs nothing refers to any more.
        """
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
            if index_is_sound(os.path.join(self.root, "index.db")):
                return False  # not damaged, or another process recovered it meanwhile
            self._move_aside()
            self._db = self._connect()
            return True

    def _recovery_lock(self) -> _Flock:
        """One process at a time decides about a damaged index (an flock the kernel drops
        when its holder dies)."""
        return _Flock(os.path.join(self.root, "locks", "index-recovery"))

    def _move_aside(self) -> None:
        """Rename index.db and its -wal/-shm to ``index.db.corrupt-<time>`` (gc removes
        them after a week); call under the recovery lock."""
        path = os.path.join(self.root, "index.db")
        aside = f"{path}.corrupt-{int(time.time())}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, aside + suffix)
        self.recovered = aside

    def _connect(self) -> sqlite3.Connection:
        path = os.path.join(self.root, "index.db")
        if not self._create and not os.path.exists(path):
            raise StoreError(f"no store at {self.root}")
        try:
            if self._create:
                old = os.umask(0o077)
                try:
                    for sub in ("", "store", "tmp", "locks"):
                        os.makedirs(os.path.join(self.root, sub), exist_ok=True)
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
            if version != SCHEMA_VERSION:
                self._migrate(db, version)
            else:
                _use_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open the store index {path}: {e}") from e
        return db

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        with self._write(db):
            now = db.execute("PRAGMA user_version").fetchone()[0]
            if now == SCHEMA_VERSION:
                return
            if now != 0 and now not in _ADDITIVE:  # another version: start over (blobs stay; gc sweeps)
                for table in ("entries", "entry_blobs", "manifests", "file_hashes", "tool_memo", "incremental",
                              "blob_stamps", "incremental_files"):
                    db.execute(f"DROP TABLE IF EXISTS {table}")
            for name in _DROPPED:
                db.execute(f"DROP INDEX IF EXISTS {name}")
            sql = "\n".join(line for line in _SCHEMA.splitlines() if not line.lstrip().startswith("--"))
            for stmt in sql.split(";"):
                if stmt.strip():
                    if "INDEX IF NOT EXISTS entries_listing " in stmt:
                        self._add_listing_columns(db)  # a table from before version 6 lacks them
                    db.execute(stmt)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        _use_wal(db)

    def _add_listing_columns(self, db: sqlite3.Connection) -> None:
        """Give an ``entries`` table from before version 6 the listing's columns, written
        for every entry (100,000 entries: ~3 s, once)."""
        have = {r[1] for r in db.execute("PRAGMA table_info(entries)")}
        missing = [c for c in listing.COLUMNS if c not in have]
        for column in missing:
            db.execute(f"ALTER TABLE entries ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
        if missing:
            self._write_listing_texts(db)

    def _write_listing_texts(self, db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT key, crate_name, crate_types, target, profile, size, created, compile_ms, "
                          "last_used FROM entries").fetchall()
        db.executemany(f"UPDATE entries SET {' = ?, '.join(listing.COLUMNS)} = ? WHERE key = ?",
                       [(*listing.texts(*r[1:8], r[0], r[8]), r[0]) for r in rows])

    def rewrite_listing_texts(self) -> None:
        """Write every entry's listing texts again from its columns (after an entry's
        columns were changed by hand; kache itself never changes the ones they show)."""
        with self._write() as db:
            self._write_listing_texts(db)

    def _write(self, db: sqlite3.Connection | None = None) -> _Transaction:
        """``with store._write() as db:`` one ``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK``
        on any exception)."""
        return _Transaction(db or self.db)

    def _read(self) -> _Transaction:
        """``with store._read() as db:`` queries that see one snapshot of the index."""
        return _Transaction(self.db, "BEGIN")

    def bulk(self) -> _Bulk:
        """``with store.bulk():`` many write transactions in a row (gc's eviction) on a
        64 MiB page cache, checkpointing the WAL every ``BULK_WAL_BYTES`` and at the end
        rather than after every commit: SQLite's automatic checkpoint (at 1,000 pages)
        rewrote and fsynced the same index pages once per batch, most of a large
        eviction's time."""
        return _Bulk(self)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------------ memo tables

    def tool_memo(self, ident: str) -> str | None:
        row = self.db.execute("SELECT value FROM tool_memo WHERE id = ?", (ident,)).fetchone()
        return None if row is None else str(row[0])

    def set_tool_memo(self, ident: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO tool_memo (id, value) VALUES (?, ?)", (ident, value))

    def file_hash_rows(self, paths: Iterable[str]) -> dict[str, tuple[int, int, int, int, int, str]]:
        out = {}
        paths = list(paths)
        for i in range(0, len(paths), 500):
            chunk = paths[i:i + 500]
            q = f"SELECT * FROM file_hashes WHERE path IN ({','.join('?' * len(chunk))})"
            for r in self.db.execute(q, chunk):
                out[r["path"]] = (r["dev"], r["ino"], r["size"], r["mtime_ns"], r["ctime_ns"], r["hash"])
        return out

    def set_file_hashes(self, rows: list[tuple[str, int, int, int, int, int, str]]) -> None:
        if rows:
            self.db.executemany("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def incremental_files(self, crate_dir: str) -> dict[tuple[int, int], tuple[int, int, str]]:
        """(dev, inode) -> (size, mtime_ns, hash) of the files last snapshotted from the
        incremental crate dir ``crate_dir``."""
        return {(r[0], r[1]): (r[2], r[3], r[4]) for r in self.db.execute(
            "SELECT dev, ino, size, mtime_ns, hash FROM incremental_files WHERE dir = ?", (crate_dir,))}

    def set_incremental_files(self, crate_dir: str, rows: list[tuple[int, int, int, int, str]]) -> None:
        """Replace the memo of ``crate_dir`` by ``rows`` of (dev, inode, size, mtime_ns, hash)."""
        with self._write() as db:
            db.execute("DELETE FROM incremental_files WHERE dir = ?", (crate_dir,))
            db.executemany("INSERT OR REPLACE INTO incremental_files VALUES (?, ?, ?, ?, ?, ?)",
                           [(crate_dir, *r) for r in rows])

    def note_incremental(self, path: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO incremental (path, last_seen) VALUES (?, ?)", (path, time.time()))

    # ------------------------------------------------------------------ manifests

    def manifest(self, mkey: str) -> list[tuple[str, list[Any]]]:
        """Recorded compiles for a cheap key, newest first: (full key, inputs)."""
        rows = self.db.execute(
            "SELECT key, inputs FROM manifests WHERE mkey = ? ORDER BY created DESC", (mkey,)).fetchall()
        return [(r["key"], quickjson.loads(r["inputs"])) for r in rows]

    # ------------------------------------------------------------------ entries

    def get(self, key: str) -> Entry | None:
        row = self.db.execute(f"SELECT {_ENTRY_SELECT} FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else Entry.from_row(row)

    def clamp_future(self, now: float) -> int:
        """Entries "last used" in the future (a clock that was ahead) become used now:
        pinned for this round, evictable by age and size from the next. Returns how many."""
        with self._write() as db:
            return db.execute("UPDATE entries SET last_used = ?, json_used = ? WHERE last_used > ?",
                              (now, listing.iso(now), now + 60)).rowcount

    def touch(self, key: str) -> None:
        """Count a hit and mark the entry used now (LRU)."""
        now = time.time()
        self.db.execute("UPDATE entries SET hits = hits + 1, last_used = ?, json_used = ? WHERE key = ?",
                        (now, listing.iso(now), key))

    def blob_path(self, digest: str) -> str:
        return blobs.blob_path(self.root, digest)

    def put_blob_file(self, src: str, digest: str, *, link: bool, executable: bool = False) -> bool:
        """Make ``src`` a blob; False when an intact blob was there already (a damaged
        one is replaced)."""
        size = os.stat(src).st_size
        if self._have_intact(digest, size):
            return False
        added = blobs.put_file(self.root, src, digest, link=link, executable=executable)
        self._verified.add(digest)
        return added

    def put_blob_bytes(self, data: bytes) -> tuple[str, bool]:
        digest = blobs.hash_bytes(data)
        if self._have_intact(digest, len(data)):
            return digest, False
        blobs.put_bytes(self.root, data)
        self._verified.add(digest)
        return digest, True

    def _have_intact(self, digest: str, size: int) -> bool:
        """Whether the blob exists and is intact; a damaged one is deleted (its entries
        notice at their next use)."""
        path = self.blob_path(digest)
        if not os.path.exists(path):
            return False
        if self.blob_problem(digest, size) is None:
            return True
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return False

    # ------------------------------------------------------------------ blob checks

    def blob_stamps(self, digests: Iterable[str]) -> dict[str, tuple[int, int, int]]:
        digests = list(digests)
        out: dict[str, tuple[int, int, int]] = {}
        for i in range(0, len(digests), 500):
            chunk = digests[i:i + 500]
            q = f"SELECT hash, ino, size, mtime_ns FROM blob_stamps WHERE hash IN ({','.join('?' * len(chunk))})"
            for r in self.db.execute(q, chunk):
                out[r[0]] = (r[1], r[2], r[3])
        return out

    def blob_problem(self, digest: str, size: int, stamp: tuple[int, int, int] | None = None, *,
                     stamp_known: bool = False, rehash: bool = False) -> str | None:
        """None when the blob is intact, else what is wrong with it ("missing", "size …",
        "content does not match its hash").

        Cheap: a blob whose stat matches its recorded stamp is taken as intact; any other
        is re-hashed (``rehash`` always re-hashes). ``stamp_known`` says the caller looked
        the stamp up already (``stamp`` None then means there is none).
        """
        path = self.blob_path(digest)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return "missing"
        if st.st_size != size:
            return f"size {st.st_size}, expected {size}"
        if not stamp_known:
            stamp = self.blob_stamps([digest]).get(digest)
        if rehash or stamp != _stamp(st):
            try:
                actual = blobs.hash_file(path)[0]
            except OSError as e:
                return f"unreadable ({e.strerror})"
            if actual != digest:
                return "content does not match its hash"
            self._verified.add(digest)  # re-hashed: its new stamp is recorded on the next write
        return None

    def files_problem(self, files: list[dict[str, Any]]) -> tuple[str, str] | None:
        """The first of an entry's ``files`` (``hash``, ``size``) whose blob is missing or
        damaged, as (hash, problem); None when all are intact. One stamp query, then a
        ``stat`` each (re-hashed when the stamp moved): see :meth:`blob_problem`."""
        stamps = self.blob_stamps(f["hash"] for f in files)
        for f in files:
            problem = self.blob_problem(f["hash"], f["size"], stamps.get(f["hash"]), stamp_known=True)
            if problem is not None:
                return f["hash"], problem
        return None

    def note_verified(self, digest: str) -> None:
        """A blob this process just wrote or hashed (e.g. imported from an archive)."""
        self._verified.add(digest)

    def stamp_blobs(self, digests: Iterable[str] | None = None) -> None:
        """Record the current stamps of the given blobs, or of those this process wrote
        or re-hashed (inside a write transaction; after any ``utime`` of a hardlinked
        output, which moves its blob's mtime)."""
        rows = []
        for digest in self._verified if digests is None else digests:
            try:
                st = os.stat(self.blob_path(digest))
            except OSError:
                continue
            rows.append((digest, *_stamp(st)))
        if rows:
            self.db.executemany("INSERT OR REPLACE INTO blob_stamps VALUES (?, ?, ?, ?)", rows)

    def drop_damaged(self, digest: str) -> list[str]:
        """Remove a damaged blob and every entry that uses it; returns the keys removed."""
        with self._write() as db:
            keys = [r[0] for r in db.execute("SELECT key FROM entry_blobs WHERE hash = ?", (digest,))]
            db.execute("DELETE FROM blob_stamps WHERE hash = ?", (digest,))
            try:
                os.unlink(self.blob_path(digest))
            except FileNotFoundError:
                pass
        self._verified.discard(digest)
        if keys:
            self.remove_unused(keys)
        return keys

    def blob_sizes(self) -> dict[str, int]:
        """Every blob an entry references, with its size: the physical total is their sum."""
        return {r[0]: r[1] for r in self.db.execute("SELECT hash, MAX(size) FROM entry_blobs GROUP BY hash")}

    def damaged_blobs(self, *, rehash: bool = False, sizes: dict[str, int] | None = None) -> dict[str, str]:
        """Every referenced blob that is missing, has the wrong size, or (when its stamp
        changed, or with ``rehash`` always) no longer matches its hash: hash → problem.
        ``sizes``: :meth:`blob_sizes`, when the caller has read it already."""
        if sizes is None:
            sizes = self.blob_sizes()
        stamps = self.blob_stamps(sizes)
        out = {}
        for digest, size in sizes.items():
            problem = self.blob_problem(digest, size, stamps.get(digest), stamp_known=True, rehash=rehash)
            if problem:
                out[digest] = problem
        return out

    def repair(self, *, rehash: bool = False, sizes: dict[str, int] | None = None) -> tuple[int, int]:
        """Remove damaged blobs and the entries that use them; stamp the blobs found
        intact (so the next check is a ``stat`` each). ``rehash`` re-hashes every blob,
        not only those whose stamp changed; ``sizes`` as for :meth:`damaged_blobs`.
        Returns (entries, blobs) removed."""
        damaged = self.damaged_blobs(rehash=rehash, sizes=sizes)
        entries = 0
        for digest in damaged:
            entries += len(self.drop_damaged(digest))
        with self._write():
            self.stamp_blobs()
        return entries, len(damaged)

    def add(self, entry: Entry, inputs: list[Any]) -> None:
        """Record an entry whose blobs are all in place, and its manifest line, atomically."""
        files = entry.meta["files"] + entry.meta.get("incremental", {}).get("files", [])
        with self._write() as db:
            # A blob removed by a concurrent gc between put and here would leave a dangling
            # entry: re-check under the write lock (gc deletes only under it).
            for f in files:
                if not os.path.exists(self.blob_path(f["hash"])):
                    raise StoreError(f"blob {f['hash']} vanished before the entry was recorded")
            self.stamp_blobs([f["hash"] for f in files if f["hash"] in self._verified])
            db.execute(
                f"INSERT OR REPLACE INTO entries ({_ENTRY_SELECT}, {', '.join(listing.COLUMNS)}) "
                f"VALUES ({', '.join('?' * (len(Entry.__slots__) + len(listing.COLUMNS)))})",
                (entry.key, entry.crate_name, entry.crate_types, entry.target, entry.profile, entry.size,
                 entry.created, entry.last_used, entry.hits, entry.compile_ms, entry.key_version, entry.mkey,
                 quickjson.dumps(entry.meta),
                 *listing.texts(entry.crate_name, entry.crate_types, entry.target, entry.profile, entry.size,
                                entry.created, entry.compile_ms, entry.key, entry.last_used)),
            )
            db.execute("DELETE FROM entry_blobs WHERE key = ?", (entry.key,))
            db.executemany("INSERT OR IGNORE INTO entry_blobs VALUES (?, ?, ?)",
                           [(entry.key, f["hash"], f["size"]) for f in files])
            db.execute("INSERT OR REPLACE INTO manifests VALUES (?, ?, ?, ?)",
                       (entry.mkey, entry.key, quickjson.dumps(inputs), time.time()))
            db.execute(
                "DELETE FROM manifests WHERE mkey = ? AND key NOT IN "
                "(SELECT key FROM manifests WHERE mkey = ? ORDER BY created DESC LIMIT ?)",
                (entry.mkey, entry.mkey, MANIFEST_CAP),
            )

    def entries(self, crate: str | None = None) -> list[Entry]:
        if crate is None:
            rows = self.db.execute(f"SELECT {_ENTRY_SELECT} FROM entries").fetchall()
        else:
            rows = self.db.execute(f"SELECT {_ENTRY_SELECT} FROM entries WHERE crate_name = ?", (crate,)).fetchall()
        return [Entry.from_row(r) for r in rows]

    def remove(self, keys: Iterable[str]) -> int:
        """Delete entries and any blob no other entry uses; returns bytes freed (physical)."""
        return self.remove_unused(keys)[1]

    def totals(self) -> dict[str, int]:
        """entries, logical bytes (sum of entries) and physical bytes (each blob once)."""
        n, logical = self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
        physical = self.db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM (SELECT hash, MAX(size) AS size FROM entry_blobs GROUP BY hash)"
        ).fetchone()[0]
        return {"entries": int(n), "logical_bytes": int(logical), "physical_bytes": int(physical)}

    # ------------------------------------------------------------------ integrity

    def check(self, *, verify_hashes: bool = False) -> list[str]:
        """Problems found: SQLite integrity; entries whose blobs are missing, have the wrong
        size, or no longer match their hash (re-hashed when their stamp changed; with
        ``verify_hashes``, every blob is re-hashed); orphan blobs. Read-only.
        """
        problems: list[str] = []
        result = self.db.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            problems.append(f"index.db: {result}")
        damaged = self.damaged_blobs(rehash=verify_hashes)
        if damaged:
            for key, digest in self.db.execute("SELECT key, hash FROM entry_blobs"):
                if digest in damaged:
                    problems.append(f"entry {key[:16]}: blob {digest[:16]}: {damaged[digest]}")
        orphans = self.orphan_blobs()
        if orphans:
            problems.append(f"{len(orphans)} orphan blob(s) no entry uses")
        return problems

    def orphan_blobs(self, older_than: float = 0.0, *, used: Container[str] | None = None) -> list[str]:
        """Blob files that no entry references (older than ``older_than`` seconds).
        ``used``: the referenced blobs, when the caller has read them already (a set read
        earlier misses blobs recorded since: ``remove_orphans`` re-checks each under the
        write lock)."""
        if used is None:
            used = {r[0] for r in self.db.execute("SELECT DISTINCT hash FROM entry_blobs")}
        out = []
        now = time.time()
        store = os.path.join(self.root, "store")
        if not os.path.isdir(store):
            return out
        for shard in os.scandir(store):
            if not shard.is_dir():
                continue
            for f in os.scandir(shard.path):
                if f.name not in used and (older_than <= 0 or now - f.stat().st_mtime > older_than):
                    out.append(f.path)
        return out

    # ------------------------------------------------------------------ reports, gc, purge
    # (read-only views for `kache list`/`stats`, and deletions that re-check under the
    # write lock what the caller decided outside it)

    SUMMARY_COLUMNS = ("key", "crate_name", "crate_types", "target", "profile", "size", "created",
                       "last_used", "hits", "compile_ms")
    _SUMMARY_ORDER = {
        "name": "crate_name, created DESC",
        "size": "size DESC, crate_name",
        "hits": "hits DESC, crate_name",
        "age": "last_used DESC, crate_name",
        "lru": "last_used, created",
    }

    def summaries(self, crate: str | None = None, *, order: str = "name", select: str | None = None,
                  select_params: tuple[str, ...] = ()) -> list[sqlite3.Row]:
        """Entries without their ``meta`` (fast for listing): the ``SUMMARY_COLUMNS``, or
        the SQL expression ``select`` over them (with ``select_params``), read from a
        covering index alone (``entries_table`` when it holds every column read, else
        ``entries_listing``).

        ``crate`` compares with ``-`` and ``_`` alike (cargo's ``proc-macro2`` is rustc's
        ``proc_macro2``). ``order`` is ``name``, ``size``, ``hits``, ``age`` (most recently
        used first) or ``lru`` (least recently used first).
        """
        return self._summary_cursor(self.db, crate, order, select, select_params).fetchall()

    def _summary_cursor(self, db: sqlite3.Connection, crate: str | None, order: str, select: str | None,
                        select_params: tuple[Any, ...]) -> sqlite3.Cursor:
        sql = f"SELECT {select or ', '.join(self.SUMMARY_COLUMNS)} FROM entries"
        params = select_params
        if crate is not None:
            sql += " WHERE replace(crate_name, '-', '_') = ?"
            params += (crate.replace("-", "_"),)
        sql += f" ORDER BY {self._SUMMARY_ORDER[order]}"
        return db.execute(sql, params)

    def summary_texts(self, expression: Callable[[Callable[..., list[Any]]], tuple[str, tuple[Any, ...]] | None],
                      *, order: str = "name") -> Iterator[str]:
        """One text per entry, in ``order``: the SQL expression over the summary columns
        that ``expression(query)`` returns, with its parameters. ``query(sql, params=())``
        runs a read (its rows) in the snapshot the texts are read from, for what the
        expression needs to know first (the distinct ``crate_types``, column widths);
        ``expression`` returns None when there is nothing to list.

        The texts are read a few thousand at a time as they are iterated (a listing of
        100,000 entries is 25 MB), the snapshot held until the last; an expression SQLite
        cannot run raises here, before anything is yielded.
        """
        from itertools import chain

        batches = self._text_batches(expression, order)
        next(batches)  # BEGIN and the queries run now: an error is raised by this call
        return chain.from_iterable(batches)  # type: ignore[arg-type] - past the primer, only lists

    def _text_batches(self, expression: Callable[[Callable[..., list[Any]]], tuple[str, tuple[Any, ...]] | None],
                      order: str) -> Iterator[list[str] | None]:
        """summary_texts' generator: yields None once the queries run, then lists of texts."""
        try:
            with self._read() as db:
                made = expression(lambda sql, params=(): db.execute(sql, params).fetchall())
                if made is None:
                    yield None
                    return
                cursor = self._summary_cursor(db, None, order, *made)
                cursor.row_factory = None  # plain tuples: a sqlite3.Row per text cost ~1 µs
                yield None
                while rows := cursor.fetchmany(4096):
                    yield [row[0] for row in rows]
        except sqlite3.ProgrammingError:
            if self._db is not None:
                raise
            # the store was closed under a reader that stopped early (`kache list | head`):
            # closing ended the read, there is nothing left to end

    def entries_like(self, crate: str) -> list[Entry]:
        """Full entries (with ``meta``) of one crate, ``-``/``_``-insensitive, newest first."""
        rows = self.db.execute(
            f"SELECT {_ENTRY_SELECT} FROM entries WHERE replace(crate_name, '-', '_') = ? ORDER BY created DESC",
            (crate.replace("-", "_"),)).fetchall()
        return [Entry.from_row(r) for r in rows]

    def blob_refs(self) -> list[tuple[str, str, int]]:
        """Every (entry key, blob hash, blob size) pair: the reference graph gc plans on."""
        cursor = self.db.execute("SELECT key, hash, size FROM entry_blobs")
        cursor.row_factory = None  # plain tuples: a sqlite3.Row each cost 0.1-0.3 s at 100,000
        return cursor.fetchall()

    def remove_unused(self, keys: Iterable[str], before: float | None = None) -> tuple[list[str], int]:
        """Delete entries, and the blobs no other entry uses, in one write transaction.

        With ``before``, an entry is deleted only if its ``last_used`` is still older than
        that (a build may have used it since the caller chose it). Returns (keys deleted,
        physical bytes freed).
        """
        keys = list(keys)
        removed: list[str] = []
        freed = 0
        if not keys:
            return removed, freed
        with self._write() as db:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for key, last_used in db.execute(f"SELECT key, last_used FROM entries WHERE key IN ({marks})", chunk):
                    if before is None or last_used < before:
                        removed.append(key)
            for i in range(0, len(removed), 500):
                chunk = removed[i:i + 500]
                marks = ",".join("?" * len(chunk))
                hashes = sorted({r[0] for r in db.execute(f"SELECT hash FROM entry_blobs WHERE key IN ({marks})",
                                                          chunk)})
                db.execute(f"DELETE FROM entry_blobs WHERE key IN ({marks})", chunk)
                db.execute(f"DELETE FROM entries WHERE key IN ({marks})", chunk)
                db.execute(f"DELETE FROM manifests WHERE key IN ({marks})", chunk)
                for h in hashes:
                    # one probe of the (hash, size) index each: DISTINCT over IN (...) would
                    # read every row of a blob that thousands of entries share
                    if db.execute("SELECT 1 FROM entry_blobs WHERE hash = ? LIMIT 1", (h,)).fetchone():
                        continue
                    db.execute("DELETE FROM blob_stamps WHERE hash = ?", (h,))
                    path = self.blob_path(h)
                    try:
                        freed += os.stat(path).st_size
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
        return removed, freed

    def remove_orphans(self, paths: Iterable[str], older_than: float = 0.0,
                       now: float | None = None) -> tuple[int, int]:
        """Delete blob files that, under the write lock, no entry references and that were
        not written or linked (mtime, ctime) in the ``older_than`` seconds before ``now``.
        Returns (count, bytes)."""
        store = os.path.join(self.root, "store") + os.sep
        count = freed = 0
        with self._write() as db:
            now = time.time() if now is None else now
            for path in paths:
                if not os.path.abspath(path).startswith(store):
                    continue
                if db.execute("SELECT 1 FROM entry_blobs WHERE hash = ? LIMIT 1",
                              (os.path.basename(path),)).fetchone():
                    continue
                try:
                    st = os.lstat(path)
                    if older_than > 0 and now - max(st.st_mtime, st.st_ctime) <= older_than:
                        continue
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                count += 1
                freed += st.st_size
        return count, freed

    def clear(self) -> tuple[int, str | None]:
        """Forget every entry and move every blob aside, atomically.

        Under the write lock the entry tables are emptied and ``store/`` is renamed into
        ``tmp/`` (so no blob is deleted outside the lock, and builds wait only for a
        rename); the caller deletes the returned directory afterwards (gc sweeps it if
        the caller dies first). Returns (entries deleted, directory to delete or None).
        """
        blobs_dir = os.path.join(self.root, "store")
        aside: str | None = os.path.join(self.root, "tmp", f"purge-{os.getpid()}-{time.time_ns()}")
        with self._write() as db:
            n = int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            db.execute("DELETE FROM entry_blobs")
            db.execute("DELETE FROM entries")
            db.execute("DELETE FROM manifests")
            db.execute("DELETE FROM incremental_files")
            assert aside is not None
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            try:
                os.rename(blobs_dir, aside)
            except FileNotFoundError:
                aside = None
            os.makedirs(blobs_dir, mode=0o700, exist_ok=True)
        return n, aside

    def incremental_dirs(self) -> list[tuple[str, float]]:
        """Incremental directories noted by the wrapper: (path, last seen), oldest first."""
        return [(r[0], r[1]) for r in self.db.execute("SELECT path, last_seen FROM incremental ORDER BY last_seen")]

    def forget_incremental(self, paths: Iterable[str]) -> None:
        with self._write() as db:
            db.executemany("DELETE FROM incremental WHERE path = ?", [(p,) for p in paths])

    def forget_vanished_memos(self) -> int:
        """Drop memo rows of what no longer exists: file hashes of vanished files (an old
        checkout, a deleted temp dir) and session files of vanished incremental crate dirs
        (a new rustc or new flags give a new ``<crate>-<hash>`` dir). Such a row can never
        match again, so only its space goes. Returns how many rows were dropped."""
        paths = [r[0] for r in self.db.execute("SELECT path FROM file_hashes")]
        dirs = [r[0] for r in self.db.execute("SELECT DISTINCT dir FROM incremental_files")]
        gone_files = [(p,) for p in paths if not os.path.lexists(p)]
        gone_dirs = [(d,) for d in dirs if not os.path.isdir(d)]
        n = 0
        for sql, rows in (("DELETE FROM file_hashes WHERE path = ?", gone_files),
                          ("DELETE FROM incremental_files WHERE dir = ?", gone_dirs)):
            for i in range(0, len(rows), 2000):  # short transactions: builds wait little
                with self._write() as db:
                    n += db.executemany(sql, rows[i:i + 2000]).rowcount
        return n

    # --- remote import/export ---
    # (read-only helpers for kache.remote: packing an entry with its manifest line, and
    # telling which keys the store already holds before downloading anything)

    def manifest_line(self, key: str) -> tuple[str, Any] | None:
        """The direct-mode manifest line recorded with an entry: (mkey, inputs), or None.

        ``inputs`` is what :meth:`add` was given (``{"files": [[path, blake3]], "env":
        [[name, value, normalized]]}``). None when the entry has no line (never recorded,
        or trimmed by ``MANIFEST_CAP``).
        """
        row = self.db.execute(
            "SELECT mkey, inputs FROM manifests WHERE key = ? ORDER BY created DESC LIMIT 1", (key,)).fetchone()
        return None if row is None else (str(row["mkey"]), quickjson.loads(row["inputs"]))

    def has_key(self, key: str) -> bool:
        """Whether an entry with this key exists (no ``meta`` decoded)."""
        return self.db.execute("SELECT 1 FROM entries WHERE key = ? LIMIT 1", (key,)).fetchone() is not None

    def key_crates(self) -> dict[str, str]:
        """Every entry's key → crate name (the cheap view sync plans on)."""
        return {r[0]: r[1] for r in self.db.execute("SELECT key, crate_name FROM entries")}

    # --- daemon ---
    # (what the daemon asks of the store: which keys a fetch under a cheap key brought in)

    def keys_by_mkey(self, mkey: str) -> list[str]:
        """Keys of the entries recorded under a cheap (direct-mode) key, newest first."""
        return [r[0] for r in self.db.execute(
            "SELECT key FROM entries WHERE mkey = ? ORDER BY created DESC", (mkey,))]
