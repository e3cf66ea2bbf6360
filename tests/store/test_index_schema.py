"""The index's layout: an older version is brought up to date in place, and the
listing, totals and gc queries read the covering indexes, not the entries' rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from kache.store.index import SCHEMA_VERSION, Store
from tests.synthetic import add_entry


def _indexes(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}


def test_a_version_3_index_gains_the_covering_indexes_and_keeps_its_entries(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = Store(str(root))
    entries = [add_entry(store, name, blobs=[b"shared", name.encode()]) for name in ("serde", "syn")]
    store.close()
    db = sqlite3.connect(root / "index.db")  # the version-3 layout
    db.execute("DROP INDEX entries_summary")
    db.execute("DROP INDEX entry_blobs_hash_size")
    db.execute("CREATE INDEX entries_crate ON entries(crate_name)")
    db.execute("CREATE INDEX entries_last_used ON entries(last_used)")
    db.execute("CREATE INDEX entry_blobs_hash ON entry_blobs(hash)")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    store = Store(str(root))
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    names = _indexes(store.db)
    assert {"entries_summary", "entry_blobs_hash_size"} <= names
    assert not names & {"entries_crate", "entries_last_used", "entry_blobs_hash"}
    assert sorted(e.key for e in store.entries()) == sorted(e.key for e in entries)
    assert store.totals() == {"entries": 2, "logical_bytes": 2 * 6 + 5 + 3, "physical_bytes": 6 + 5 + 3}
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_listing_totals_and_lru_read_only_the_covering_indexes(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s"))
    add_entry(store, "serde")

    def plan(sql: str) -> str:
        return " | ".join(r[3] for r in store.db.execute(f"EXPLAIN QUERY PLAN {sql}"))

    cols = ", ".join(Store.SUMMARY_COLUMNS)
    for order in Store._SUMMARY_ORDER.values():
        assert "COVERING INDEX entries_summary" in plan(f"SELECT {cols} FROM entries ORDER BY {order}")
    assert "COVERING INDEX entries_summary" in plan("SELECT COUNT(*), SUM(size) FROM entries")
    assert "COVERING INDEX entry_blobs_hash_size" in plan(
        "SELECT hash, MAX(size) FROM entry_blobs GROUP BY hash")
    assert "COVERING INDEX entry_blobs_hash_size" in plan("SELECT 1 FROM entry_blobs WHERE hash = 'x' LIMIT 1")
