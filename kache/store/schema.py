"""The index's tables (DDL), ``SCHEMA_VERSION`` and the migrations from older versions.

The version is kept in ``PRAGMA user_version``. A version in ``ADDITIVE`` becomes the
current one in place (the tables, columns and indexes it lacks are created, those in
``DROPPED`` dropped); any other is rebuilt empty, never guessed at (blobs stay; gc
sweeps those no entry uses). What each table holds: see kache.store.store.

Imported by the index on the wrapper's hot path: stdlib and ``listing`` only.
"""

from __future__ import annotations

from kache.store import listing

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3

__all__ = ["SCHEMA_VERSION", "ADDITIVE", "DROPPED", "DDL", "TABLES", "upgrade", "write_listing_texts"]

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
# Versions 6 and 7 exist for `kache list`'s speed, a bound: `list` and `list --json` on
# 100,000 entries within 0.5 s (docs/performance.md, "Scale"; benchmarks/scale.py).
# Measured 2026-12-07 on that store, the SQL of `list --json` alone: 0.11-0.12 s from
# the stored texts, 0.41-0.59 s when SQLite formats each entry from its columns
# (json_quote, datetime), before the process and the pipe. Without them the bound fails.
# Versions that become the current one by creating the tables, columns and indexes they
# lack (and dropping the indexes in DROPPED).
ADDITIVE = {2, 3, 4, 5, 6}
DROPPED = ("entries_crate", "entries_last_used", "entry_blobs_hash", "entries_summary")

DDL = """
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

TABLES = ("entries", "entry_blobs", "manifests", "file_hashes", "tool_memo", "incremental", "blob_stamps",
          "incremental_files")


def upgrade(db: sqlite3.Connection) -> None:
    """Bring the index to ``SCHEMA_VERSION``, inside the caller's write transaction (a
    no-op when another connection did it first)."""
    now = db.execute("PRAGMA user_version").fetchone()[0]
    if now == SCHEMA_VERSION:
        return
    if now != 0 and now not in ADDITIVE:  # another version: start over (blobs stay; gc sweeps)
        for table in TABLES:
            db.execute(f"DROP TABLE IF EXISTS {table}")
    for name in DROPPED:
        db.execute(f"DROP INDEX IF EXISTS {name}")
    sql = "\n".join(line for line in DDL.splitlines() if not line.lstrip().startswith("--"))
    for stmt in sql.split(";"):
        if stmt.strip():
            if "INDEX IF NOT EXISTS entries_listing " in stmt:
                _add_listing_columns(db)  # a table from before version 6 lacks them
            db.execute(stmt)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _add_listing_columns(db: sqlite3.Connection) -> None:
    """Give an ``entries`` table from before version 6 the listing's columns, written
    for every entry (100,000 entries: ~3 s, once)."""
    have = {r[1] for r in db.execute("PRAGMA table_info(entries)")}
    missing = [c for c in listing.COLUMNS if c not in have]
    for column in missing:
        db.execute(f"ALTER TABLE entries ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
    if missing:
        write_listing_texts(db)


def write_listing_texts(db: sqlite3.Connection) -> None:
    """Write every entry's listing texts (listing.COLUMNS) from its columns."""
    rows = db.execute("SELECT key, crate_name, crate_types, target, profile, size, created, compile_ms, "
                      f"last_used, {listing.PACKAGE_SQL} FROM entries").fetchall()
    db.executemany(f"UPDATE entries SET {' = ?, '.join(listing.COLUMNS)} = ? WHERE key = ?",
                   [(*listing.texts(name, types, target, profile, size, created, compile_ms, key, used, package), key)
                    for key, name, types, target, profile, size, created, compile_ms, used, package in rows])
