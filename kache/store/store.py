"""The local store: an SQLite index over content-addressed blobs (``Store``, ``Entry``).

What is where under the store root: see layout.py. The index's tables (their DDL and
migrations: schema.py; the version is in ``PRAGMA user_version``):

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
``blob_stamps``  what integrity.py checks blobs against.
the memos        ``file_hashes``, ``tool_memo``, ``incremental``, ``incremental_files``:
                 see memos.py.

``Store`` composes the connection (connection.py: opening, transactions, recovery of a
damaged index), the blobs' integrity (``store.integrity``) and the memos
(``store.memos``), and holds the entry queries. Every write is one transaction; an
entry is inserted only after all its blobs exist, so a crash can leave orphan blobs (gc
removes them) but never an entry without data.

Imported on the wrapper's hot path: stdlib, ``_sqlite3`` and kache's hot modules only.
"""

from __future__ import annotations

import os
import time

from kache import quickjson
from kache._record import Record
from kache.store import blobs, layout, listing, schema
from kache.store.connection import Bulk, Connection, StoreError, Transaction, is_damage, sqlite3
from kache.store.integrity import DamagedBlob, Integrity
from kache.store.memos import Memos

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

# The store's public surface: Store and Entry, and the errors and the sqlite3 module its
# callers catch (the modules behind it — connection, integrity, memos, schema — are its own).
__all__ = ["Store", "Entry", "PIN_SECS", "MANIFEST_CAP", "StoreError", "DamagedBlob", "is_damage", "sqlite3"]

# Entries used this recently are never evicted: a build may be restoring them.
PIN_SECS = 120.0
# A manifest keeps this many recorded compiles per cheap key (newest win).
MANIFEST_CAP = 16


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
    """One local store; cheap to open (one SQLite connection, created on first use).

    ``store.integrity`` (integrity.py) checks and repairs blobs; ``store.memos``
    (memos.py) holds the memo tables. The methods below that only pass a call on to
    them are the ones the wrapper calls.
    """

    def __init__(self, root: str, *, create: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.conn = Connection(self.root, create=create)
        self.integrity = Integrity(self.conn, self.remove)
        self.memos = Memos(self.conn)

    # ------------------------------------------------------------------ the connection

    @property
    def db(self) -> sqlite3.Connection:
        return self.conn.db

    def open(self) -> Store:
        """Open (and, unless ``create=False``, create) the index now rather than on first
        use, so that a broken store is reported where the caller can say so."""
        _ = self.conn.db
        return self

    @property
    def is_open(self) -> bool:
        """Whether the index connection is open (a closed store opens again on use)."""
        return self.conn.is_open

    @property
    def recovered(self) -> str | None:
        """Where a corrupt index was moved aside by this process, if it was."""
        return self.conn.recovered

    def transaction(self) -> Transaction:
        """``with store.transaction() as db:`` one ``BEGIN IMMEDIATE`` … ``COMMIT``
        (``ROLLBACK`` on any exception) that several writes share."""
        return self.conn.write()

    def bulk(self) -> Bulk:
        """``with store.bulk():`` many write transactions in a row (gc's eviction) on a
        64 MiB page cache, checkpointing the WAL every ``BULK_WAL_BYTES`` and at the end
        rather than after every commit: SQLite's automatic checkpoint (at 1,000 pages)
        rewrote and fsynced the same index pages once per batch, most of a large
        eviction's time."""
        return self.conn.bulk()

    def recover_if_corrupt(self) -> bool:
        """See :meth:`Connection.recover_if_corrupt`."""
        return self.conn.recover_if_corrupt()

    def forget_verified(self) -> None:
        """Drop the memo of blobs this connection checked (a long-lived store between
        requests: each request stamps its own blobs)."""
        self.integrity.verified.clear()

    def close(self) -> None:
        self.conn.close()

    def rewrite_listing_texts(self) -> None:
        """Write every entry's listing texts again from its columns (after an entry's
        columns were changed by hand; kache itself never changes the ones they show)."""
        with self.conn.write() as db:
            schema.write_listing_texts(db)

    # ------------------------------------------------------------------ for the wrapper
    # (calls passed on to the memos and the integrity checks)

    def tool_memo(self, ident: str) -> str | None:
        return self.memos.tool_memo(ident)

    def set_tool_memo(self, ident: str, value: str) -> None:
        self.memos.set_tool_memo(ident, value)

    def file_hash_rows(self, paths: Iterable[str]) -> dict[str, tuple[int, int, int, int, int, str]]:
        return self.memos.file_hash_rows(paths)

    def set_file_hashes(self, rows: list[tuple[str, int, int, int, int, int, str]]) -> None:
        self.memos.set_file_hashes(rows)

    def incremental_files(self, crate_dir: str) -> dict[tuple[int, int], tuple[int, int, str]]:
        return self.memos.incremental_files(crate_dir)

    def set_incremental_files(self, crate_dir: str, rows: list[tuple[int, int, int, int, str]]) -> None:
        self.memos.set_incremental_files(crate_dir, rows)

    def note_incremental(self, path: str) -> None:
        self.memos.note_incremental(path)

    def blob_stamps(self, digests: Iterable[str]) -> dict[str, tuple[int, int, int]]:
        return self.integrity.blob_stamps(digests)

    def blob_problem(self, digest: str, size: int, stamp: tuple[int, int, int] | None = None, *,
                     stamp_known: bool = False, rehash: bool = False) -> str | None:
        return self.integrity.blob_problem(digest, size, stamp, stamp_known=stamp_known, rehash=rehash)

    def files_problem(self, files: list[dict[str, Any]]) -> tuple[str, str] | None:
        return self.integrity.files_problem(files)

    def stamp_blobs(self, digests: Iterable[str] | None = None) -> None:
        self.integrity.stamp_blobs(digests)

    def drop_damaged(self, digest: str) -> list[str]:
        return self.integrity.drop_damaged(digest)

    def check(self, *, verify_hashes: bool = False) -> list[str]:
        return self.integrity.check(verify_hashes=verify_hashes)

    # ------------------------------------------------------------------ manifests

    def manifest(self, mkey: str) -> list[tuple[str, dict[str, Any]]]:
        """Recorded compiles for a cheap key, newest first: (full key, inputs)."""
        rows = self.conn.db.execute(
            "SELECT key, inputs FROM manifests WHERE mkey = ? ORDER BY created DESC", (mkey,)).fetchall()
        return [(r["key"], quickjson.loads(r["inputs"])) for r in rows]

    # ------------------------------------------------------------------ entries

    def get(self, key: str) -> Entry | None:
        row = self.conn.db.execute(f"SELECT {_ENTRY_SELECT} FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else Entry.from_row(row)

    def clamp_future(self, now: float) -> int:
        """Entries "last used" in the future (a clock that was ahead) become used now:
        pinned for this round, evictable by age and size from the next. Returns how many."""
        with self.conn.write() as db:
            updated: int = db.execute("UPDATE entries SET last_used = ?, json_used = ? WHERE last_used > ?",
                                      (now, listing.iso(now), now + 60)).rowcount
            return updated

    def touch(self, key: str) -> None:
        """Count a hit and mark the entry used now (LRU)."""
        now = time.time()
        self.conn.db.execute("UPDATE entries SET hits = hits + 1, last_used = ?, json_used = ? WHERE key = ?",
                        (now, listing.iso(now), key))

    def blob_path(self, digest: str) -> str:
        return layout.blob_path(self.root, digest)

    def put_blob_file(self, src: str, digest: str, *, link: bool, executable: bool = False) -> bool:
        """Make ``src`` a blob; False when an intact blob was there already (a damaged
        one is replaced)."""
        size = os.stat(src).st_size
        if self.integrity.have_intact(digest, size):
            return False
        added = blobs.put_file(self.root, src, digest, link=link, executable=executable)
        self.integrity.verified.add(digest)
        return added

    def put_blob_bytes(self, data: bytes) -> tuple[str, bool]:
        digest = blobs.hash_bytes(data)
        if self.integrity.have_intact(digest, len(data)):
            return digest, False
        blobs.put_bytes(self.root, data)
        self.integrity.verified.add(digest)
        return digest, True

    def add(self, entry: Entry, inputs: dict[str, Any]) -> None:
        """Record an entry whose blobs are all in place, and its manifest line, atomically."""
        files = entry.meta["files"] + entry.meta.get("incremental", {}).get("files", [])
        with self.conn.write() as db:
            # A blob removed by a concurrent gc between put and here would leave a dangling
            # entry: re-check under the write lock (gc deletes only under it).
            for f in files:
                if not os.path.exists(self.blob_path(f["hash"])):
                    raise StoreError(f"blob {f['hash']} vanished before the entry was recorded")
            self.integrity.stamp_blobs([f["hash"] for f in files if f["hash"] in self.integrity.verified])
            db.execute(
                f"INSERT OR REPLACE INTO entries ({_ENTRY_SELECT}, {', '.join(listing.COLUMNS)}) "
                f"VALUES ({', '.join('?' * (len(Entry.__slots__) + len(listing.COLUMNS)))})",
                (entry.key, entry.crate_name, entry.crate_types, entry.target, entry.profile, entry.size,
                 entry.created, entry.last_used, entry.hits, entry.compile_ms, entry.key_version, entry.mkey,
                 quickjson.dumps(entry.meta),
                 *listing.texts(entry.crate_name, entry.crate_types, entry.target, entry.profile, entry.size,
                                entry.created, entry.compile_ms, entry.key, entry.last_used,
                                entry.meta.get("package"))),
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
            rows = self.conn.db.execute(f"SELECT {_ENTRY_SELECT} FROM entries").fetchall()
        else:
            rows = self.conn.db.execute(f"SELECT {_ENTRY_SELECT} FROM entries WHERE crate_name = ?", (crate,)).fetchall()
        return [Entry.from_row(r) for r in rows]

    def remove(self, keys: Iterable[str]) -> int:
        """Delete entries and any blob no other entry uses; returns bytes freed (physical)."""
        return self.remove_unused(keys)[1]

    def totals(self) -> dict[str, int]:
        """entries, logical bytes (sum of entries) and physical bytes (each blob once)."""
        n, logical = self.conn.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
        physical = self.conn.db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM (SELECT hash, MAX(size) AS size FROM entry_blobs GROUP BY hash)"
        ).fetchone()[0]
        return {"entries": int(n), "logical_bytes": int(logical), "physical_bytes": int(physical)}

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
        rows: list[sqlite3.Row] = self._summary_cursor(self.conn.db, crate, order, select, select_params).fetchall()
        return rows

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
        return chain.from_iterable(batch or () for batch in batches)  # past the primer, only lists

    def _text_batches(self, expression: Callable[[Callable[..., list[Any]]], tuple[str, tuple[Any, ...]] | None],
                      order: str) -> Iterator[list[str] | None]:
        """summary_texts' generator: yields None once the queries run, then lists of texts."""
        try:
            with self.conn.read() as db:
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
            if self.conn.is_open:
                raise
            # the store was closed under a reader that stopped early (`kache list | head`):
            # closing ended the read, there is nothing left to end

    def entries_like(self, crate: str) -> list[Entry]:
        """Full entries (with ``meta``) of one crate, ``-``/``_``-insensitive, newest first."""
        rows = self.conn.db.execute(
            f"SELECT {_ENTRY_SELECT} FROM entries WHERE replace(crate_name, '-', '_') = ? ORDER BY created DESC",
            (crate.replace("-", "_"),)).fetchall()
        return [Entry.from_row(r) for r in rows]

    def build_script_entries(self, package: str) -> list[Entry]:
        """Full entries of the build script of ``package`` (recorded in their meta;
        ``-``/``_``-insensitive), newest first."""
        rows = self.conn.db.execute(
            f"SELECT {_ENTRY_SELECT} FROM entries WHERE crate_name GLOB 'build_script_*' "
            f"AND replace({listing.PACKAGE_SQL}, '-', '_') = ? ORDER BY created DESC",
            (package.replace("-", "_"),)).fetchall()
        return [Entry.from_row(r) for r in rows]

    def build_script_packages(self) -> dict[str, object]:
        """The package recorded in each build script's meta, by entry key (unchecked:
        :func:`listing.package_of` decides what is shown)."""
        rows = self.conn.db.execute(f"SELECT key, {listing.PACKAGE_SQL} FROM entries "
                                    "WHERE crate_name GLOB 'build_script_*'").fetchall()
        return {key: package for key, package in rows}

    def blob_refs(self) -> list[tuple[str, str, int]]:
        """Every (entry key, blob hash, blob size) pair: the reference graph gc plans on."""
        cursor = self.conn.db.execute("SELECT key, hash, size FROM entry_blobs")
        cursor.row_factory = None  # plain tuples: a sqlite3.Row each cost 0.1-0.3 s at 100,000
        refs: list[tuple[str, str, int]] = cursor.fetchall()
        return refs

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
        with self.conn.write() as db:
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
        store = layout.blobs_dir(self.root) + os.sep
        count = freed = 0
        with self.conn.write() as db:
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
        blobs_dir = layout.blobs_dir(self.root)
        aside: str | None = layout.purge_dir(self.root, time.time_ns())
        with self.conn.write() as db:
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

    # --- remote import/export ---
    # (read-only helpers for kache.remote: packing an entry with its manifest line, and
    # telling which keys the store already holds before downloading anything)

    def manifest_line(self, key: str) -> tuple[str, Any] | None:
        """The direct-mode manifest line recorded with an entry: (mkey, inputs), or None.

        ``inputs`` is what :meth:`add` was given (``{"files": [[path, blake3]], "env":
        [[name, value, normalized]]}``). None when the entry has no line (never recorded,
        or trimmed by ``MANIFEST_CAP``).
        """
        row = self.conn.db.execute(
            "SELECT mkey, inputs FROM manifests WHERE key = ? ORDER BY created DESC LIMIT 1", (key,)).fetchone()
        return None if row is None else (str(row["mkey"]), quickjson.loads(row["inputs"]))

    def has_key(self, key: str) -> bool:
        """Whether an entry with this key exists (no ``meta`` decoded)."""
        return self.conn.db.execute("SELECT 1 FROM entries WHERE key = ? LIMIT 1", (key,)).fetchone() is not None

    def key_crates(self) -> dict[str, str]:
        """Every entry's key → crate name (the cheap view sync plans on)."""
        return {r[0]: r[1] for r in self.conn.db.execute("SELECT key, crate_name FROM entries")}

    # --- daemon ---
    # (what the daemon asks of the store: which keys a fetch under a cheap key brought in)

    def keys_by_mkey(self, mkey: str) -> list[str]:
        """Keys of the entries recorded under a cheap (direct-mode) key, newest first."""
        return [r[0] for r in self.conn.db.execute(
            "SELECT key FROM entries WHERE mkey = ? ORDER BY created DESC", (mkey,))]
