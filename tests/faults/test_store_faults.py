"""Wrapper and store faults over real cargo builds of tests/fixtures/ws.

Each test puts one fault in kache's way — a wrapper killed with SIGKILL at a stage of
storing or restoring, a full disk, a read-only store, a damaged index, a damaged blob,
clocks in the future — and shows the same four things: the build succeeds (or, for a
killed wrapper, only that build fails: a killed compiler is the fault itself), the next
build is correct (``verify_app`` against plain cargo, and every restored output has the
bytes of its blob), ``kache doctor`` reports what is left broken, and ``kache gc`` (or
``doctor --fix``) repairs it, after which doctor and ``Store.check(verify_hashes=True)``
find nothing. Faults come from tests/faults/inject (patched in every kache process of a
build), from a small tmpfs mounted as the store (real ENOSPC and EROFS), or from the test
writing to the store's files directly.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kache.store.store import Store
from tests.support import reliability
from tests.support.env import kache_log
from tests.support.faults import (
    Faults,
    check_served,
    doctor,
    entry_problems,
    gc_later,
    index_check,
    leftovers,
    referenced,
    seed_store,
    store_entries,
    store_problems,
)
from tests.support.workspace import CACHEABLE_CRATES, Workspace, outcomes

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

HIT = "local_hit"


def assert_repaired(ws: Workspace) -> dict[str, int]:
    """``kache gc`` (as it runs later) leaves a store that doctor and a full re-hash find
    sound, with no temp file of an unfinished put. Returns gc's report."""
    report = gc_later(ws)
    assert index_check(ws)["status"] == "ok"
    assert store_problems(ws) == []
    assert not list((ws.store / "tmp").glob("put-*"))
    return report


def assert_warm_rebuild_is_right(ws: Workspace) -> None:
    """After ``cargo clean`` every cacheable unit is restored, with the right bytes."""
    ws.clean()
    ws.take_events(), ws.take_rustc_runs()
    ws.build()
    events = ws.take_events()
    assert {c: outcomes(events).get(c) for c in CACHEABLE_CRATES} == dict.fromkeys(CACHEABLE_CRATES, HIT)
    assert ws.take_rustc_runs() == ["kc_app"]
    assert check_served(ws, events) > 0
    ws.verify_app()


# --------------------------------------------------------------------------- 1. kill -9

# (stage, fault, warm store?, what the killed wrapper leaves: "x" always, "x?" maybe —
# a unit's outputs are stored one by one, so earlier blobs of that unit are orphans)
KILL_STAGES = [
    ("miss-before-put-file", "kill:before:kache.store.blobs:put_file", False, "orphans?"),
    # between the temp file and its rename: both kinds of put chmod the temp file there
    # (this patches os.chmod for the whole process; a miss calls it nowhere else)
    ("miss-mid-put", "kill:before:kache.store.blobs:os.chmod", False, "temp orphans?"),
    ("miss-after-put-file", "kill:after:kache.store.blobs:put_file", False, "orphans"),
    ("miss-after-put-bytes", "kill:after:kache.store.blobs:put_bytes", False, "orphans"),
    # inside Store.add's write transaction (blob stamps written, the entry not yet)
    ("miss-inside-add", "kill:after:kache.store.integrity:Integrity.stamp_blobs", False, "orphans"),
    # after the entry is recorded, before its event (or a passthrough's) is logged
    ("miss-before-event", "kill:before:kache.store.events:append", False, ""),
    ("hit-before-place", "kill:before:kache.engine.restore:_place", True, ""),
    ("hit-after-place", "kill:after:kache.engine.restore:_place", True, ""),
    ("hit-after-restore", "kill:after:kache.engine.restore:restore", True, ""),
    # inside the touch transaction (hit counted and blobs stamped, not committed)
    ("hit-inside-touch", "kill:after:kache.store.store:Store.touch", True, ""),
]


def _expect(leaves: str, what: str, found: bool) -> None:
    words = leaves.split()
    if what in words:
        assert found, f"the fault should have left {what}"
    elif f"{what}?" not in words:
        assert not found, f"the fault left {what}"


@pytest.mark.parametrize(("stage", "spec", "warm", "leaves"), KILL_STAGES, ids=[s[0] for s in KILL_STAGES])
def test_a_wrapper_killed_at_any_stage_never_leads_to_a_wrong_artifact(
        fault_ws: Callable[..., Workspace], faults: Faults, stage: str, spec: str, warm: bool, leaves: str) -> None:
    """SIGKILL while a miss is stored or a hit restored: that build fails (its compiler
    died), nothing half-written ever becomes an entry, doctor names the orphans left,
    the next build is right without any repair, and gc later removes the leftovers."""
    ws = fault_ws(warm=warm)
    out = ws.cargo("build", check=False, **faults.env(spec))
    assert faults.take_fired(), f"{spec} never fired:\n{out.stderr}"
    assert out.returncode != 0 and "SIGKILL" in out.stderr

    orphans, temps = leftovers(ws)
    _expect(leaves, "orphans", bool(orphans))
    _expect(leaves, "temp", bool(temps))
    assert entry_problems(ws) == []  # no entry without all of its data
    index = doctor(ws)["store index"]
    if orphans:
        assert index["status"] == "warn" and f"{len(orphans)} orphan blob(s)" in index["detail"], index
    else:
        assert index["status"] == "ok", index

    ws.take_events()
    ws.build()  # no repair first
    ws.verify_app()
    check_served(ws, ws.take_events())

    assert_repaired(ws)
    for path in orphans:  # gone, or taken up by the entry the next build recorded
        assert not os.path.exists(path) or referenced(ws, os.path.basename(path))
    if not warm:  # the entries recorded after the fault serve the right bytes
        assert_warm_rebuild_is_right(ws)


# --------------------------------------------------------------------------- 2. disk full


def test_a_full_disk_while_storing_never_fails_a_build(fault_ws: Callable[..., Workspace], faults: Faults,
                                                        tmpfs: Callable[..., bool], tmp_path: Path) -> None:
    """The store on a 3 MiB tmpfs: the proc macro and the build script (~5 MiB each)
    hit a real ENOSPC while they are stored. Both builds succeed and are right, nothing
    partial becomes an entry, doctor says the disk is too small for the cache, and the
    store is sound after gc. (Without mount rights: ENOSPC injected on every blob put.)"""
    store = tmp_path / "small-store"
    real = tmpfs(store, "3m")
    ws = fault_ws(store=store)
    out = ws.build(**({} if real else faults.env("enospc:before:kache.store.blobs:put_file")))
    assert "kache:" not in out.stderr, out.stderr  # kache speaks to the terminal and its log
    if real:
        said = kache_log(store) + kache_log()
        full = [line for line in said.splitlines() if "No space left" in line or "disk is full" in line]
        reliability.count("faults injected", len(full))
        assert full, said
    else:
        assert faults.take_fired()
    ws.verify_app()
    assert entry_problems(ws) == []
    checks = doctor(ws)
    assert checks["store index"]["status"] in ("ok", "warn"), checks["store index"]
    if real:
        assert checks["free disk"]["status"] == "warn", checks["free disk"]

    ws.clean()
    ws.take_events()
    ws.build()
    ws.verify_app()
    check_served(ws, ws.take_events())
    assert_repaired(ws)


# --------------------------------------------------------------------------- 3. read-only store


def test_a_read_only_store_never_fails_a_build(fault_ws: Callable[..., Workspace], faults: Faults,
                                               tmpfs: Callable[..., bool], tmp_path: Path,
                                               prepared_store: Path) -> None:
    """A warm store on a tmpfs remounted read-only (root ignores chmod): the build
    succeeds and is right, doctor says the store is not writable; once writable again the
    store is sound and serves every unit. (Without mount rights: EROFS injected on every
    blob put of a cold build.)"""
    store = tmp_path / "ro-store"
    real = tmpfs(store, "32m")
    ws = fault_ws(store=store)
    if real:
        seed_store(prepared_store, store)
        assert tmpfs.remount(store, "ro")  # type: ignore[attr-defined]
        reliability.count("faults injected")
        out = ws.build()
        assert "kache:" not in out.stderr, out.stderr
        assert "kache: warning: cache unavailable" in kache_log(), kache_log()
    else:
        spec = "erofs:before:kache.store.blobs:put_file;erofs:before:kache.store.blobs:put_bytes"
        ws.build(**faults.env(spec))
        assert faults.take_fired()
    ws.verify_app()
    if not real:
        return
    assert doctor(ws)["store writable"]["status"] == "fail"
    assert tmpfs.remount(store, "rw")  # type: ignore[attr-defined]
    assert index_check(ws)["status"] == "ok" and store_problems(ws) == []
    assert_warm_rebuild_is_right(ws)


# --------------------------------------------------------------------------- 4. index.db damaged


def _why(events: list[dict]) -> list[tuple[str, str, str]]:
    """(crate, outcome, reason) of each event: an assertion's message says why a unit
    ended as it did."""
    return [(e.get("crate", ""), e.get("outcome", ""), e.get("reason", "")) for e in events]


def damage_index(ws: Workspace, how: str) -> None:
    """Delete index.db (and its WAL), cut it in half, overwrite it in place with random
    bytes of the same size, or only all but its first page ("torn": it still opens, its
    tables are garbage). Counted as a fault."""
    db = ws.store / "index.db"
    # Wrapper calls end without closing their connection (os._exit): recent pages may still
    # be in the WAL. Checkpoint first, so the damage hits the entries themselves.
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    elif how == "truncated":
        os.truncate(db, db.stat().st_size // 2)
    else:
        size = db.stat().st_size
        keep = 4096 if how == "torn" else 0
        with open(db, "r+b") as f:
            f.seek(keep)
            f.write(os.urandom(size - keep))
    reliability.count("faults injected")


@pytest.mark.parametrize("how", ["deleted", "truncated", "garbage", "torn"])
def test_a_damaged_index_between_builds_costs_only_cache_hits(fault_ws: Callable[..., Workspace], how: str) -> None:
    """index.db lost, truncated, overwritten or torn between a build and a clean
    rebuild: doctor reports a damaged index, the rebuild succeeds and is right (every
    unit compiled again, its blobs found in place, its entry recorded anew), and after gc
    the store is sound and serves a clean build entirely."""
    ws = fault_ws(warm=True)
    damage_index(ws, how)
    if how != "deleted":
        assert doctor(ws)["store index"]["status"] == "fail"
    ws.build()
    taken = ws.take_events()
    events = outcomes(taken)
    assert all(events[c] in ("miss", "dup") for c in CACHEABLE_CRATES), _why(taken)
    ws.verify_app()
    assert entry_problems(ws) == []
    assert_repaired(ws)
    assert_warm_rebuild_is_right(ws)


def test_a_compile_whose_index_was_replaced_meanwhile_is_recorded_in_the_new_one(
        fault_ws: Callable[..., Workspace], faults: Faults) -> None:
    """Recording after rustc finds the index damaged, and moved aside meanwhile by a
    parallel call (the race behind an intermittent "error" in the test above): each
    wrapper's first write of an entry fails as a damaged index's would, and the index in
    place is sound. Every unit is still recorded, in that index, and serves the next
    clean build."""
    ws = fault_ws()
    ws.build(**faults.env("malformed:before:kache.store.store:Store.add"))
    assert len(faults.take_fired()) >= len(CACHEABLE_CRATES)
    taken = ws.take_events()
    events = outcomes(taken)
    assert all(events[c] in ("miss", "dup") for c in CACHEABLE_CRATES), _why(taken)
    ws.verify_app()
    assert entry_problems(ws) == []
    assert_warm_rebuild_is_right(ws)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_index_during_a_build_never_fails_it(fault_ws: Callable[..., Workspace], faults: Faults,
                                                       how: str) -> None:
    """index.db damaged while a warm build runs (a wrapper has just looked its entry up
    and is held there for half a second): the build succeeds, what it restored is right,
    and the next clean build is right; doctor --fix and gc leave a sound, warm store."""
    ws = fault_ws(warm=True)
    entries = store_entries(ws)  # what the build can restore, read while the index is whole
    env = {**os.environ, **ws.env, **faults.env("slow:after:kache.engine.restore:look_up", KACHE_TEST_SLOW_SECS="0.5")}
    proc = subprocess.Popen(["cargo", "build", "--offline"], cwd=ws.path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not faults.log.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert faults.log.exists(), "no wrapper reached the look-up"
    damage_index(ws, how)
    _, stderr = proc.communicate(timeout=300)
    reliability.count("builds run")
    if proc.returncode != 0:
        reliability.count("builds failed")
    assert proc.returncode == 0, stderr
    assert faults.take_fired()
    ws.verify_app()
    check_served(ws, ws.take_events(), entries)

    ws.clean()
    ws.build()
    ws.verify_app()
    # Against the entries as they are now: a unit compiled again after the damage was
    # recorded anew, and an incremental compile does not give the same bytes twice.
    check_served(ws, ws.take_events())
    doctor(ws, "--fix")
    assert index_check(ws)["status"] in ("ok", "warn")  # orphans are gc's, an hour on
    assert_repaired(ws)
    assert_warm_rebuild_is_right(ws)


def test_gc_removes_a_corrupt_index_moved_aside(fault_ws: Callable[..., Workspace]) -> None:
    """A build that finds index.db unreadable moves it aside (``index.db.corrupt-<time>``
    and its WAL) and starts anew; gc removes what was moved aside once it is old (else
    every recovery leaves a copy of the index behind for good)."""
    ws = fault_ws(warm=True)
    damage_index(ws, "garbage")
    ws.build()
    assert "moved it aside" in kache_log(ws.store)
    assert list(ws.store.glob("index.db.corrupt-*"))
    gc_later(ws, hours=8 * 24)
    assert list(ws.store.glob("index.db.corrupt-*")) == []
    assert store_problems(ws) == []


# --------------------------------------------------------------------------- 5. a damaged blob


def core_rlib_blob(ws: Workspace) -> Path:
    store = Store(str(ws.store), create=False)
    try:
        (entry,) = store.entries("kc_core")
        (f,) = [f for f in entry.meta["files"] if f["name"].endswith(".rlib")]
        return Path(store.blob_path(f["hash"]))
    finally:
        store.close()


def damage_blob(blob: Path, how: str) -> None:
    """Truncate the blob to half, or flip bytes in its middle keeping its size (it is
    0444 and hardlinked into no target/: chmod first, as any root tool could)."""
    blob.chmod(0o644)
    size = blob.stat().st_size
    if how == "truncated":
        os.truncate(blob, size // 2)
    else:
        with open(blob, "r+b") as f:
            f.seek(size // 2)
            chunk = f.read(64)
            f.seek(size // 2)
            f.write(bytes(b ^ 0xFF for b in chunk))
        assert blob.stat().st_size == size
    blob.chmod(0o444)
    reliability.count("faults injected")


def used_warm(ws: Workspace) -> None:
    """A warm build, then cargo clean: the store's blobs were restored (and stamped) once."""
    ws.build()
    events = outcomes(ws.take_events())
    assert {c: events.get(c) for c in CACHEABLE_CRATES} == dict.fromkeys(CACHEABLE_CRATES, HIT)
    ws.clean()
    ws.take_rustc_runs()


@pytest.mark.parametrize("how", ["truncated", "same-size"])
def test_a_damaged_blob_is_never_served(fault_ws: Callable[..., Workspace], how: str) -> None:
    """kc_core's rlib blob truncated, or altered in place at the same size after a build
    restored (and stamped) it: doctor reports it, the next build compiles kc_core for
    real instead of restoring it and is right, and the store heals (the next clean build
    is all hits)."""
    ws = fault_ws(warm=True)
    if how == "same-size":  # the stamp kache keeps of the blob is fresh: only its mtime tells
        used_warm(ws)
    blob = core_rlib_blob(ws)
    damage_blob(blob, how)
    index = doctor(ws)["store index"]
    assert index["status"] == "fail" and blob.name[:16] in index["detail"], index

    ws.build()
    assert "kc_core" in ws.take_rustc_runs()
    assert outcomes(ws.take_events())["kc_core"] != HIT
    ws.verify_app()
    assert store_problems(ws) == []
    assert_warm_rebuild_is_right(ws)


def test_gc_removes_the_entries_of_a_damaged_blob(fault_ws: Callable[..., Workspace]) -> None:
    """kc_core's rlib blob altered at the same size: ``kache gc`` removes that blob and
    the entries using it (broken_removed), doctor then finds nothing, and the next build
    compiles kc_core and is right."""
    ws = fault_ws(warm=True)
    damage_blob(core_rlib_blob(ws), "same-size")
    report = gc_later(ws)
    assert report["broken_removed"] >= 1, report
    assert index_check(ws)["status"] == "ok" and store_problems(ws) == []
    ws.build()
    assert "kc_core" in ws.take_rustc_runs()
    ws.verify_app()
    assert_warm_rebuild_is_right(ws)


# --------------------------------------------------------------------------- 6. clock skew

DAY = 86400.0


def test_timestamps_in_the_future_never_hide_an_edit(fault_ws: Callable[..., Workspace]) -> None:
    """Sources, store blobs and outputs in target/ dated a day ahead, and entries last
    used a day ahead: builds succeed and serve the right bytes, an edit is compiled (its
    content, not its time, decides), undoing it is served from the store, and gc still
    brings such a store under its size limit."""
    ws = fault_ws(warm=True)
    future = time.time() + DAY
    for src in [*ws.path.rglob("*.rs"), ws.path / "core" / "answer.txt"]:
        os.utime(src, (future, future))
    for blob in (ws.store / "store").rglob("*"):
        if blob.is_file():
            os.utime(blob, (future, future))
    db = sqlite3.connect(ws.store / "index.db")
    with db:
        db.execute("UPDATE entries SET last_used = ?", (future,))
    db.close()
    reliability.count("faults injected", 3)

    ws.build()
    events = ws.take_events()
    assert {c: outcomes(events).get(c) for c in CACHEABLE_CRATES} == dict.fromkeys(CACHEABLE_CRATES, HIT)
    check_served(ws, events)
    ws.verify_app()

    shapes = ws.path / "core" / "src" / "shapes.rs"
    original = shapes.read_text()
    shapes.write_text(original.replace("w * h", "w * h + 1"))  # mtime now: older than the rest
    ws.take_rustc_runs()
    ws.build()
    assert "kc_core" in ws.take_rustc_runs()
    assert ws.app().startswith("hello 42 13 / hello 42 13\n")

    # Outputs from the future too; the undo is dated past them (else cargo itself would
    # not look): the entry of the original source is served again.
    for out in ws.target.rglob("*"):
        if out.is_file() and not out.is_symlink():
            os.utime(out, (future, future))
    shapes.write_text(original)
    os.utime(shapes, (future + DAY, future + DAY))
    ws.take_events()
    ws.build()
    events = ws.take_events()
    assert outcomes(events)["kc_core"] == HIT
    check_served(ws, events)
    ws.verify_app()
    assert entry_problems(ws) == []


def test_gc_evicts_entries_last_used_in_the_future(fault_ws: Callable[..., Workspace]) -> None:
    """A store over its size limit whose entries say they were last used a day from now
    (recorded under a clock that was ahead): gc still brings it under the limit — at the
    latest on its second run, an hour after the first (one round of pinning is fair: a
    build may have used them under that clock just now; a day of it is not)."""
    ws = fault_ws(warm=True)
    db = sqlite3.connect(ws.store / "index.db")
    with db:
        db.execute("UPDATE entries SET last_used = ?", (time.time() + DAY,))
    db.close()
    reliability.count("faults injected")
    gc_later(ws, hours=2, KACHE_MAX_SIZE="1MB")
    report = gc_later(ws, hours=3, KACHE_MAX_SIZE="1MB")
    assert report["after_bytes"] <= report["max_bytes"], report
    assert store_problems(ws) == []
