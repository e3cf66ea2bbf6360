"""Blob stamps: a damaged blob is caught by a stat (or a re-hash when its stamp moved),
never served, reported by ``check`` and removed by ``repair``/gc."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from kache.store.gc import gc
from kache.store.schema import SCHEMA_VERSION
from kache.store.store import Store
from tests.support.entries import add_entry


def _alter(path: str, data: bytes | None = None, *, truncate: bool = False) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        if truncate:
            f.truncate(1)
        else:
            old = f.read()
            f.seek(0)
            f.write(data if data is not None else bytes([old[0] ^ 1]) + old[1:])


def test_a_new_blob_is_stamped_and_taken_as_intact_with_one_stat(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s"))
    e = add_entry(store, "foo")
    f = e.meta["files"][0]
    stamps = store.blob_stamps([f["hash"]])
    st = os.stat(store.blob_path(f["hash"]))
    assert stamps[f["hash"]] == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert store.blob_problem(f["hash"], f["size"]) is None


def test_same_size_alteration_and_truncation_are_caught(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s"))
    a, b = add_entry(store, "a"), add_entry(store, "b")
    fa, fb = a.meta["files"][0], b.meta["files"][0]
    _alter(store.blob_path(fa["hash"]))
    _alter(store.blob_path(fb["hash"]), truncate=True)
    assert store.blob_problem(fa["hash"], fa["size"]) == "content does not match its hash"
    assert store.blob_problem(fb["hash"], fb["size"]).startswith("size 1, expected")
    problems = store.check()
    assert any(fa["hash"][:16] in p and "does not match" in p for p in problems)
    assert any(fb["hash"][:16] in p and "size 1" in p for p in problems)


def test_a_moved_stamp_with_intact_content_is_re_hashed_and_restamped(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s"))
    e = add_entry(store, "foo")
    f = e.meta["files"][0]
    path = store.blob_path(f["hash"])
    os.utime(path, ns=(1, 1))  # e.g. a restore stamping a hardlinked output
    assert store.blob_problem(f["hash"], f["size"]) is None
    assert store.integrity.repair() == (0, 0)
    assert store.blob_stamps([f["hash"]])[f["hash"]][2] == 1  # stamp follows the verified file


def test_repair_and_gc_remove_damaged_blobs_and_their_entries_only(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s"))
    shared = b"shared blob"
    a = add_entry(store, "a", blobs=[shared, b"a own"])
    b = add_entry(store, "b", blobs=[shared])
    c = add_entry(store, "c")
    _alter(store.blob_path(a.meta["files"][0]["hash"]))  # the shared one
    report = gc(store, 1 << 30, max_age=None, clean_incremental=False)
    assert (report.broken_removed, report.damaged_blobs) == (2, 1)
    assert {x.key for x in store.entries()} == {c.key}
    assert report.before_bytes == report.after_bytes == c.size  # measured after the repair
    assert not os.path.exists(store.blob_path(a.meta["files"][0]["hash"]))
    assert not os.path.exists(store.blob_path(a.meta["files"][1]["hash"]))  # unused now
    assert store.check() == [] and b.key not in {x.key for x in store.entries()}


def test_putting_a_blob_over_a_damaged_one_replaces_it(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s"))
    data = b"the real bytes of an rlib"
    e = add_entry(store, "foo", blobs=[data])
    digest = e.meta["files"][0]["hash"]
    _alter(store.blob_path(digest))
    again, added = store.put_blob_bytes(data)
    assert (again, added) == (digest, True)
    assert Path(store.blob_path(digest)).read_bytes() == data
    src = tmp_path / "out.rlib"
    src.write_bytes(data)
    _alter(store.blob_path(digest), truncate=True)
    assert store.put_blob_file(str(src), digest, link=False) is True
    assert Path(store.blob_path(digest)).read_bytes() == data


def test_a_version_2_index_gains_blob_stamps_and_keeps_its_entries(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = Store(str(root))
    e = add_entry(store, "foo")
    store.close()
    db = sqlite3.connect(root / "index.db")
    db.execute("DROP TABLE blob_stamps")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    store = Store(str(root))
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [x.key for x in store.entries()] == [e.key]
    f = e.meta["files"][0]
    assert store.blob_stamps([f["hash"]]) == {}
    assert store.blob_problem(f["hash"], f["size"]) is None  # no stamp: re-hashed, intact
