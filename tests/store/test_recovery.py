"""Recovering a damaged index: what the connection does with the files of one moved aside."""

from __future__ import annotations

import os
from pathlib import Path

from kache.store import layout
from kache.store.store import Store
from tests.support.entries import add_entry


def test_closing_a_connection_to_a_moved_aside_index_leaves_the_new_index_s_files(tmp_path: Path) -> None:
    """SQLite's last connection to a database deletes its -wal and -shm by name when it
    closes, unless it sees the file moved (SQLITE_READONLY_DBMOVED): a process closing
    its connection to an index moved aside leaves the new index's files alone."""
    root = str(tmp_path / "s")
    old = Store(root)
    add_entry(old, "foo")  # open, in WAL mode
    index = layout.index_path(root)
    for suffix in ("", "-wal", "-shm"):  # moved aside by another process
        if os.path.exists(index + suffix):
            os.replace(index + suffix, layout.moved_aside_index(root, 1) + suffix)
    new = Store(root)
    e = add_entry(new, "bar")
    assert os.path.exists(index + "-wal") and os.path.exists(index + "-shm")
    old.close()
    assert not old.is_open
    assert os.path.exists(index + "-wal") and os.path.exists(index + "-shm")
    assert new.get(e.key) is not None and Store(root).get(e.key) is not None
    new.close()


def test_a_damaged_index_is_moved_aside_once_even_with_files_missing(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    store = Store(root)
    add_entry(store, "foo")
    store.close()
    index = layout.index_path(root)
    for suffix in ("-wal", "-shm"):  # deleted meanwhile (SQLite does, for an empty index)
        Path(index + suffix).unlink(missing_ok=True)
    with open(index, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(os.path.getsize(index) - 4096))
    store = Store(root)
    assert store.recover_if_corrupt() is True
    assert store.recovered is not None and os.path.exists(store.recovered)
    assert store.totals()["entries"] == 0
    assert Store(root).recover_if_corrupt() is False  # sound now


def test_an_index_moved_aside_under_a_connection_counts_as_damage(tmp_path: Path) -> None:
    """A write through a connection whose file a parallel recovery renamed fails with
    SQLITE_READONLY_DBMOVED, an OperationalError: the caller recovers and opens the
    index in place, as for a malformed one, rather than giving up on the cache."""
    import sqlite3

    from kache.store.connection import is_damage, moved_under

    path = tmp_path / "index.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE t (x)")
    os.replace(path, tmp_path / "index.db.corrupt-1")
    try:
        db.execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as e:
        assert moved_under(e) and is_damage(e), e.sqlite_errorname
    else:
        raise AssertionError("the write went through")
    finally:
        db.close()
    assert not is_damage(sqlite3.OperationalError("database is locked"))
