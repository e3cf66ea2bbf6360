"""kache.store.gc: age and LRU eviction, pins, orphans, temp files, incremental dirs; purge."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from kache.store import layout
from kache.store.connection import index_is_sound
from kache.store.gc import INDEX_CHECK_SECS, checked_gc, gc, last_index_check, purge
from kache.store.store import PIN_SECS, Store
from tests.support.entries import add_entry

KB = 1000


def _keys(store: Store) -> set[str]:
    return {r["key"] for r in store.summaries()}


def _blob(n: int, tag: str) -> bytes:
    return tag.encode().ljust(n, b".")


def _ten_entries(store: Store, now: float) -> list[str]:
    """Ten entries of 1000 unique bytes each, used 10..1 hours ago (index 0 is the oldest)."""
    return [add_entry(store, f"c{i}", blobs=[_blob(KB, f"c{i}")], last_used=now - (10 - i) * 3600).key
            for i in range(10)]


def test_under_the_limit_nothing_is_evicted(store: Store) -> None:
    now = time.time()
    keys = _ten_entries(store, now)
    report = gc(store, 10 * KB, max_age=None, clean_incremental=False, now=now)
    assert report.entries_evicted == 0
    assert _keys(store) == set(keys)
    assert report.before_bytes == report.after_bytes == 10 * KB


def test_over_the_limit_lru_goes_first_down_to_90_percent(store: Store) -> None:
    now = time.time()
    keys = _ten_entries(store, now)
    report = gc(store, 8 * KB, max_age=None, clean_incremental=False, now=now)
    # 10 000 > 8 000: evict until <= 7 200, i.e. the three least recently used.
    assert report.evicted == {"max-age": 0, "size": 3}
    assert _keys(store) == set(keys[3:])
    assert report.before_bytes == 10 * KB and report.after_bytes == 7 * KB
    assert report.evicted_bytes == 3 * KB
    assert report.pinned == 0
    for key in keys[:3]:
        assert store.get(key) is None
    assert not os.path.exists(store.blob_path(_hash(_blob(KB, "c0"))))
    assert os.path.exists(store.blob_path(_hash(_blob(KB, "c3"))))


def _hash(data: bytes) -> str:
    from kache.store.blobs import hash_bytes

    return hash_bytes(data)


def test_recently_used_entries_are_pinned(store: Store) -> None:
    now = time.time()
    old = add_entry(store, "old", blobs=[_blob(KB, "old")], last_used=now - 3600).key
    fresh = [add_entry(store, f"f{i}", blobs=[_blob(KB, f"f{i}")], last_used=now - PIN_SECS / 2).key
             for i in range(4)]
    report = gc(store, 2 * KB, max_age=None, clean_incremental=False, now=now)
    assert report.evicted["size"] == 1
    assert _keys(store) == set(fresh)
    assert report.pinned == 4
    assert report.after_bytes == 4 * KB
    assert store.get(old) is None


def test_max_age_evicts_unused_entries_even_under_the_limit(store: Store) -> None:
    now = time.time()
    stale = add_entry(store, "stale", last_used=now - 40 * 86400).key
    used = add_entry(store, "used", last_used=now - 86400).key
    report = gc(store, 10**9, max_age=30 * 86400, clean_incremental=False, now=now)
    assert report.evicted == {"max-age": 1, "size": 0}
    assert _keys(store) == {used}
    assert store.get(stale) is None


def test_a_shared_blob_survives_until_its_last_entry_goes(store: Store) -> None:
    now = time.time()
    shared = _blob(4 * KB, "shared")
    a = add_entry(store, "a", blobs=[shared, _blob(KB, "a")], last_used=now - 7200).key
    b = add_entry(store, "b", blobs=[shared, _blob(KB, "b")], last_used=now - 3600).key
    assert store.totals()["physical_bytes"] == 6 * KB
    report = gc(store, int(5.5 * KB), max_age=None, clean_incremental=False, now=now)
    # Target 4 950. Evicting `a` frees only its own blob (the shared one is still b's),
    # leaving 5 000: `b` goes too, and the shared blob with it.
    assert report.evicted["size"] == 2
    assert not os.path.exists(store.blob_path(_hash(shared)))
    c = add_entry(store, "c", blobs=[shared, _blob(KB, "c")], last_used=now - 7200).key
    d = add_entry(store, "d", blobs=[shared, _blob(KB, "d")], last_used=now - 3600).key
    report = gc(store, int(5.8 * KB), max_age=None, clean_incremental=False, now=now)
    assert report.evicted["size"] == 1  # 6 000 -> 5 000 <= 5 220
    assert _keys(store) == {d}
    assert store.get(c) is None
    assert os.path.exists(store.blob_path(_hash(shared)))
    assert not os.path.exists(store.blob_path(_hash(_blob(KB, "c"))))
    assert store.check() == []
    assert store.get(a) is None and store.get(b) is None


def test_a_large_eviction_in_growing_batches_keeps_shared_blobs_of_survivors(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """1,200 entries evicted in batches that grow from 256 (a blob shared by entries in
    different batches goes with its last user); the bulk mode's settings are undone."""
    import kache.store.gc as gc_mod

    monkeypatch.setattr(gc_mod, "LOCK_SECS", 60.0)  # every batch "quick": 256, 512, 1024
    batches: list[int] = []
    real = store.remove_unused
    monkeypatch.setattr(store, "remove_unused", lambda keys, before=None: (
        batches.append(len(keys)), real(keys, before))[1])
    now = time.time()
    shared = [_blob(100, f"shared{j}") for j in range(4)]
    keys = []
    for i in range(1300):  # entry i shares blob i % 4 with every fourth entry, oldest first
        keys.append(add_entry(store, f"c{i}", blobs=[shared[i % 4], _blob(10, f"own{i}")],
                              last_used=now - 10_000 + i).key)
    assert store.totals()["physical_bytes"] == 400 + 1300 * 10
    report = gc(store, 1500, max_age=None, clean_incremental=False, now=now)
    # Target 1 350: the 4 shared blobs stay while any user does, so only 95 entries remain.
    assert report.evicted["size"] == 1205 == sum(batches)
    assert batches[:3] == [256, 512, 437]
    assert _keys(store) == set(keys[1205:])
    assert all(os.path.exists(store.blob_path(_hash(b))) for b in shared)
    assert not os.path.exists(store.blob_path(_hash(_blob(10, "own0"))))
    assert store.check() == []
    assert report.after_bytes == 400 + 95 * 10
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    assert store.db.execute("PRAGMA cache_size").fetchone()[0] == -2000


def test_remove_unused_rechecks_last_use(store: Store) -> None:
    now = time.time()
    key = add_entry(store, "x", last_used=now - 3600).key
    store.touch(key)  # a build used it after gc chose it
    removed, freed = store.remove_unused([key], before=now - PIN_SECS)
    assert (removed, freed) == ([], 0)
    assert store.get(key) is not None


def test_orphan_blobs_are_removed_only_when_old(store: Store) -> None:
    now = time.time()
    kept = add_entry(store, "kept", blobs=[b"used blob"], last_used=now)
    orphan, _ = store.put_blob_bytes(b"nobody uses me")
    report = gc(store, 10**9, max_age=None, clean_incremental=False, now=now)
    assert report.orphans_removed == 0
    assert os.path.exists(store.blob_path(orphan))
    report = gc(store, 10**9, max_age=None, clean_incremental=False, now=now + 2 * 3600)
    assert (report.orphans_removed, report.orphan_bytes) == (1, len(b"nobody uses me"))
    assert not os.path.exists(store.blob_path(orphan))
    assert os.path.exists(store.blob_path(kept.meta["files"][0]["hash"]))


def test_stale_temp_files_and_old_stamps_go(store: Store) -> None:
    now = time.time()
    tmp = Path(store.root) / "tmp"
    (tmp / "put-1-abc").write_bytes(b"half a blob")
    (tmp / layout.WARNED).mkdir()
    (tmp / layout.WARNED / "stamp").touch()
    (tmp / "purge-1-2").mkdir()
    (tmp / "purge-1-2" / "ab").mkdir()
    (tmp / "purge-1-2" / "ab" / "blob").write_bytes(b"12345")
    (tmp / "someone-elses-dir").mkdir()
    report = gc(store, 10**9, max_age=None, clean_incremental=False, now=now)
    assert report.temp_removed == 0 and (tmp / "put-1-abc").exists()
    report = gc(store, 10**9, max_age=None, clean_incremental=False, now=now + 2 * 3600)
    assert (report.temp_removed, report.temp_bytes) == (2, 16)
    assert not (tmp / "put-1-abc").exists() and not (tmp / "purge-1-2").exists()
    assert (tmp / layout.WARNED / "stamp").exists() and (tmp / "someone-elses-dir").exists()
    gc(store, 10**9, max_age=None, clean_incremental=False, now=now + 8 * 86400)
    assert (tmp / layout.WARNED).is_dir() and not (tmp / layout.WARNED / "stamp").exists()


def test_incremental_dirs_are_removed_when_asked(store: Store, tmp_path: Path) -> None:
    inc = tmp_path / "ws" / "target" / "debug" / "incremental"
    (inc / "foo-1abc" / "s-xyz").mkdir(parents=True)
    (inc / "foo-1abc" / "s-xyz" / "query-cache.bin").write_bytes(b"q" * 100)
    (inc / "app-2def").mkdir()  # a session in use by a build right now
    store.note_incremental(str(inc))
    store.note_incremental(str(tmp_path / "gone" / "incremental"))
    report = gc(store, 10**9, max_age=None, clean_incremental=False)
    assert report.incremental_removed == 0 and inc.exists()
    assert len(store.memos.incremental_dirs()) == 2
    report = gc(store, 10**9, max_age=None, clean_incremental=True)
    assert report.incremental_removed == 0 and (inc / "foo-1abc").exists()  # recent sessions stay
    assert [p for p, _ in store.memos.incremental_dirs()] == [str(inc)]  # the vanished one is forgotten
    old = time.time() - 2 * 3600
    os.utime(inc / "foo-1abc", (old, old))
    report = gc(store, 10**9, max_age=None, clean_incremental=True)
    assert (report.incremental_removed, report.incremental_bytes) == (1, 100)
    assert not (inc / "foo-1abc").exists() and (inc / "app-2def").exists()


def test_a_path_that_is_not_incremental_state_is_never_deleted(store: Store, tmp_path: Path) -> None:
    precious = tmp_path / "src"
    precious.mkdir()
    store.note_incremental(str(precious))
    report = gc(store, 10**9, max_age=None, clean_incremental=True)
    assert report.incremental_removed == 0 and precious.exists()
    assert store.memos.incremental_dirs() == []


def test_memo_rows_of_vanished_files_and_session_dirs_are_forgotten(store: Store, tmp_path: Path) -> None:
    kept, gone = tmp_path / "src" / "lib.rs", tmp_path / "old-checkout" / "lib.rs"
    for p in (kept, gone):
        p.parent.mkdir()
        p.write_text("fn f() {}")
    store.set_file_hashes([(str(p), 1, 2, 9, 3, 4, "ab" * 32) for p in (kept, gone)])
    live, stale = tmp_path / "incremental" / "foo-1abc", tmp_path / "incremental" / "foo-9old"
    for d in (live, stale):
        d.mkdir(parents=True)
        store.set_incremental_files(str(d), [(1, 10, 5, 6, "cd" * 32), (1, 11, 5, 6, "ef" * 32)])
    report = gc(store, 10**9, max_age=None, clean_incremental=False)
    assert report.memo_rows_removed == 0  # everything is still there
    gone.unlink()
    stale.rmdir()
    report = gc(store, 10**9, max_age=None, clean_incremental=False)
    assert report.memo_rows_removed == 3 and report.to_json()["memo_rows_removed"] == 3
    assert [r[0] for r in store.db.execute("SELECT path FROM file_hashes")] == [str(kept)]
    assert store.incremental_files(str(live)) == {(1, 10): (5, 6, "cd" * 32), (1, 11): (5, 6, "ef" * 32)}
    assert store.incremental_files(str(stale)) == {}


def test_purge_everything_keeps_the_store_usable(store: Store) -> None:
    for name in ("a", "b", "c"):
        add_entry(store, name, blobs=[_blob(KB, name), b"shared"])
    entries, freed = purge(store, None)
    assert (entries, freed) == (3, 3 * KB + len(b"shared"))
    assert store.totals() == {"entries": 0, "logical_bytes": 0, "physical_bytes": 0}
    assert [p for p in Path(store.root, "store").rglob("*") if p.is_file()] == []
    assert list(Path(store.root, "tmp").iterdir()) == []
    again = add_entry(store, "a", blobs=[_blob(KB, "a")])
    assert store.get(again.key) is not None and store.check() == []


def test_purge_one_crate_with_dash_or_underscore(store: Store) -> None:
    pm = [add_entry(store, "proc_macro2", blobs=[_blob(KB, f"pm{i}"), b"shared"]).key for i in range(2)]
    other = add_entry(store, "quote", blobs=[_blob(KB, "quote"), b"shared"]).key
    assert purge(store, "proc-macro2") == (2, 2 * KB)
    assert _keys(store) == {other}
    assert store.get(pm[0]) is None
    assert store.check() == []
    assert purge(store, "proc_macro2") == (0, 0)
    assert purge(store, "quote") == (1, KB + len(b"shared"))


# --------------------------------------------------------------------------- the index file's check


def _damage_pages_of(store: Store, *tables: str) -> None:
    """Overwrite every page of ``tables`` (b-trees, their indexes included) with random
    bytes, leaving the rest of index.db whole: damage only a query of those tables, or
    SQLite's own check, meets. Closes the store first (its WAL checkpointed)."""
    import sqlite3

    store.close()
    path = os.path.join(store.root, "index.db")
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            pages = [r[0] for r in db.execute(
                f"SELECT pageno FROM dbstat WHERE name IN ({','.join('?' * len(tables))})", tables)]
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table to find a table's pages")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    assert pages
    with open(path, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(os.urandom(page_size))


def _last_check(store: Store, when: float | None) -> None:
    """Pretend the last `kache gc` found the index sound at ``when`` (None: no report)."""
    report = Path(store.root) / "tmp" / "gc-last.json"
    if when is None:
        report.unlink(missing_ok=True)
    else:
        report.write_text(json.dumps({"finished": when, "index_checked": when}))


@pytest.mark.parametrize("last", [None, -2 * 86400, -INDEX_CHECK_SECS, 3 * 3600])
def test_damage_gc_reads_past_is_found_by_the_index_check_when_one_is_due(store: Store, last: float | None) -> None:
    """The manifests table torn (gc never reads it while it evicts nothing): `kache gc`
    finds it when no check is known, when the last is a day old or more, or when the
    last is in the future (a clock set back); it moves the index aside and collects on
    a new one, which it records as checked now."""
    now = time.time()
    _ten_entries(store, now)
    _last_check(store, None if last is None else now + last)
    _damage_pages_of(store, "manifests", "manifests_key")
    report = checked_gc(store, 10**9, max_age=None, clean_incremental=False, now=now)
    moved = store.recovered
    assert moved is not None and os.path.exists(moved) and moved.startswith(os.path.join(store.root, "index.db.corrupt-"))
    assert report.index_checked == now
    assert _keys(store) == set() and report.before_bytes == report.after_bytes == 0
    assert index_is_sound(os.path.join(store.root, "index.db"))
    assert json.loads((Path(store.root) / "tmp" / "gc-last.json").read_text())["index_checked"] == now


def test_between_checks_gc_does_not_read_the_whole_index(store: Store) -> None:
    """Checked an hour ago: gc neither checks again nor reads the torn manifests, and
    keeps the last check's time; the day after, it finds the damage."""
    now = time.time()
    keys = _ten_entries(store, now)
    _last_check(store, now - 3600)
    _damage_pages_of(store, "manifests", "manifests_key")
    report = checked_gc(store, 10**9, max_age=None, clean_incremental=False, now=now)
    moved = store.recovered
    assert moved is None and _keys(store) == set(keys)
    assert report.index_checked == now - 3600 and report.before_bytes == report.after_bytes == 10 * KB
    report = checked_gc(store, 10**9, max_age=None, clean_incremental=False, now=now + 86400)
    moved = store.recovered
    assert moved is not None and report.index_checked == now + 86400


def test_gc_that_meets_a_damaged_index_between_checks_moves_it_aside(store: Store) -> None:
    """The blob references torn an hour after a check: gc's first query finds them
    malformed, and gc checks, moves the index aside and collects on a new one instead
    of failing."""
    now = time.time()
    _ten_entries(store, now)
    _last_check(store, now - 3600)
    _damage_pages_of(store, "entry_blobs", "entry_blobs_hash_size")
    report = checked_gc(store, 10**9, max_age=None, clean_incremental=False, now=now)
    moved = store.recovered
    assert moved is not None and os.path.exists(moved)
    assert report.index_checked == now and _keys(store) == set()
    assert index_is_sound(os.path.join(store.root, "index.db"))


def test_a_gc_without_a_check_keeps_the_last_checks_time(store: Store) -> None:
    """The daemon's gc (plain ``gc``) does not check the index: its report carries the
    time of the last check forward, so it neither hides a due check nor causes one."""
    now = time.time()
    _ten_entries(store, now)
    _last_check(store, now - 5000)
    assert gc(store, 10**9, max_age=None, clean_incremental=False, now=now).index_checked == now - 5000
    assert last_index_check(store.root) == now - 5000
    _last_check(store, None)
    assert gc(store, 10**9, max_age=None, clean_incremental=False, now=now).index_checked is None
