"""The index's layout: an older version is brought up to date in place, and the
listing, totals and gc queries read the covering indexes, not the entries' rows."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from kache.store import listing
from kache.store.entries import SORTS, list_entries, list_json, list_table
from kache.store.schema import SCHEMA_VERSION
from kache.store.store import Store
from tests.support.entries import add_entry


def _indexes(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}


def _as_version_6(db: sqlite3.Connection) -> None:
    """Turn a current index into the version-6 layout: no entries_table."""
    db.execute("DROP INDEX entries_table")
    db.execute("PRAGMA user_version = 6")


def _as_version_5(db: sqlite3.Connection) -> None:
    """Turn a current index into the version-5 layout: no listing texts, entries_summary."""
    _as_version_6(db)
    db.execute("DROP INDEX entries_listing")
    for column in listing.COLUMNS:
        db.execute(f"ALTER TABLE entries DROP COLUMN {column}")
    db.execute("CREATE INDEX entries_summary ON entries("
               "crate_name, created DESC, key, crate_types, target, profile, size, last_used, hits, compile_ms)")
    db.execute("PRAGMA user_version = 5")


def _as_version_3(db: sqlite3.Connection) -> None:
    """The version-3 layout: no covering indexes, one index per listing column."""
    _as_version_5(db)
    db.execute("DROP INDEX entries_summary")
    db.execute("DROP INDEX entry_blobs_hash_size")
    db.execute("CREATE INDEX entries_crate ON entries(crate_name)")
    db.execute("CREATE INDEX entries_last_used ON entries(last_used)")
    db.execute("CREATE INDEX entry_blobs_hash ON entry_blobs(hash)")
    db.execute("PRAGMA user_version = 3")


def _reopened_as(store: Store, layout: Callable[[sqlite3.Connection], None]) -> Store:
    """Close ``store``, turn its index into an older ``layout``, and open it again (which
    brings it up to date)."""
    store.close()
    db = sqlite3.connect(Path(store.root) / "index.db")
    layout(db)
    db.commit()
    db.close()
    return Store(store.root)


def test_a_version_5_index_gains_the_listing_texts_and_keeps_its_entries(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s"))
    now = time.time()
    add_entry(store, "serde", crate_types="lib", hits=3, created=now - 7200, last_used=now - 60)
    add_entry(store, "multi", crate_types="rlib,cdylib", compile_ms=0, target="x86_64-unknown-linux-gnu")
    add_entry(store, 'quo"te\\ü\n', crate_types="", profile="r\u00e9lease")
    before = [i.to_json() for i in list_entries(store)]
    store = _reopened_as(store, _as_version_5)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
    names = _indexes(store.db)
    assert {"entries_listing", "entries_table"} <= names and "entries_summary" not in names
    assert [json.loads(t) for t in list_json(store)] == before
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_version_6_index_gains_the_table_index_and_keeps_its_entries(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s"))
    now = time.time()
    add_entry(store, "serde", hits=3, created=now - 7200, last_used=now - 60)
    add_entry(store, "syn", crate_types="proc-macro", profile="release")
    before = [i.to_json() for i in list_entries(store)]
    store = _reopened_as(store, _as_version_6)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {"entries_listing", "entries_table"} <= _indexes(store.db)
    assert [json.loads(t) for t in list_json(store)] == before
    table = list_table(store, now=now)
    assert table is not None and [line.split()[0] for line in table.lines] == ["serde", "syn"]
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_version_3_index_gains_the_covering_indexes_and_keeps_its_entries(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s"))
    entries = [add_entry(store, name, blobs=[b"shared", name.encode()]) for name in ("serde", "syn")]
    store = _reopened_as(store, _as_version_3)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    names = _indexes(store.db)
    assert {"entries_listing", "entries_table", "entry_blobs_hash_size"} <= names
    assert not names & {"entries_crate", "entries_last_used", "entry_blobs_hash", "entries_summary"}
    assert [json.loads(t)["crate"] for t in list_json(store)] == ["serde", "syn"]
    assert sorted(e.key for e in store.entries()) == sorted(e.key for e in entries)
    assert store.totals() == {"entries": 2, "logical_bytes": 2 * 6 + 5 + 3, "physical_bytes": 6 + 5 + 3}
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_listing_totals_and_lru_read_only_the_covering_indexes(tmp_path: Path) -> None:
    """The queries kache runs (as SQLite traces them) read the narrow table index where
    it covers them, the listing index for the --json texts, never the rows."""
    store = Store(str(tmp_path / "s"))
    add_entry(store, "serde")

    def plan(sql: str) -> str:
        return " | ".join(r[3] for r in store.db.execute(f"EXPLAIN QUERY PLAN {sql}"))

    def traced(run: Callable[..., object], *args: object, **kwargs: object) -> list[str]:
        seen: list[str] = []
        store.db.set_trace_callback(seen.append)
        try:
            result = run(*args, **kwargs)
            if hasattr(result, "lines"):
                list(result.lines)
            elif hasattr(result, "__next__"):
                list(result)
        finally:
            store.db.set_trace_callback(None)
        return [sql for sql in seen if sql.lstrip().upper().startswith("SELECT")]

    for sort in SORTS:
        table = traced(list_table, store, sort)
        assert len(table) == 2 and all("COVERING INDEX entries_table" in plan(sql) for sql in table), sort
        [texts] = traced(list_json, store, sort)[1:]  # after "is there any entry?"
        assert "COVERING INDEX entries_listing" in plan(texts), sort
        [rows, scripts] = traced(list_entries, store, None, sort)
        assert "COVERING INDEX entries_listing" in plan(rows), sort
        # a build script's package is read from its row alone (a range of the name index)
        assert "SEARCH entries USING INDEX" in plan(scripts) and "(crate_name>? AND crate_name<?)" in plan(scripts)
    [totals, physical] = traced(store.totals)
    assert "COVERING INDEX entries_table" in plan(totals)
    assert "COVERING INDEX entry_blobs_hash_size" in plan(physical)
    [lru] = traced(store.summaries, None, order="lru", select="key, last_used")
    assert "COVERING INDEX entries_table" in plan(lru)
    assert "COVERING INDEX entry_blobs_hash_size" in plan("SELECT 1 FROM entry_blobs WHERE hash = 'x' LIMIT 1")
