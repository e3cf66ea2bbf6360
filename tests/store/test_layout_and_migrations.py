"""The store's layout names what kache writes under a store root, and every schema
version the index has had becomes the current one (kept in place, or rebuilt empty)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from kache.store import layout
from kache.store.schema import ADDITIVE, SCHEMA_VERSION
from kache.store.store import Entry, Store
from tests.support.entries import add_entry


def test_a_new_store_has_the_layout_it_names(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    store = Store(root).open()
    store.close()
    for path in (layout.index_path(root), layout.blobs_dir(root), layout.tmp_dir(root), layout.locks_dir(root)):
        assert os.path.exists(path), path
    assert layout.blob_path(root, "ab" + "0" * 62) == os.path.join(root, "store", "ab", "ab" + "0" * 62)
    assert os.path.basename(layout.purge_dir(root, 7)).startswith(layout.PURGE_PREFIX)
    assert layout.is_moved_aside_index(os.path.basename(layout.moved_aside_index(root, 1)))
    assert layout.events_path(root, 1) == os.path.join(root, "events.1.jsonl")


def test_kept_scratch_names_are_disjoint_and_in_tmp() -> None:
    assert not layout.STAMP_DIRS & layout.KEPT_FILES
    assert layout.DAEMON_STALLED not in layout.KEPT_FILES  # meaningful for 30 s: swept when old
    for name in layout.STAMP_DIRS | layout.KEPT_FILES:
        assert os.sep not in name


def _reopened_as(tmp_path: Path, version: int) -> tuple[Store, Entry]:
    """A store with one entry, its index marked ``version``, opened again."""
    store = Store(str(tmp_path / "s"))
    e = add_entry(store, "foo")
    store.close()
    db = sqlite3.connect(tmp_path / "s" / "index.db")
    db.execute(f"PRAGMA user_version = {version}")
    db.close()
    return Store(str(tmp_path / "s")), e


@pytest.mark.parametrize("version", sorted(ADDITIVE))
def test_an_additive_version_keeps_its_entries(tmp_path: Path, version: int) -> None:
    store, e = _reopened_as(tmp_path, version)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.get(e.key) is not None


@pytest.mark.parametrize("version", [1, SCHEMA_VERSION + 1])
def test_any_other_version_is_rebuilt_empty_and_its_blobs_stay(tmp_path: Path, version: int) -> None:
    store, e = _reopened_as(tmp_path, version)
    blob = store.blob_path(e.meta["files"][0]["hash"])
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.get(e.key) is None and store.totals()["entries"] == 0
    assert os.path.exists(blob)  # gc sweeps it as an orphan
